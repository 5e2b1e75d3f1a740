"""Stripe `Idempotency-Key` semantics on top of Powertools idempotency.

Same key and same parameters within 24 h replay the first successful response (status
and body), marked `Idempotent-Replayed: true`. Same key with other parameters is a 400
`idempotency_error`; a key whose first request is still running is a 409. Requests that
fail are not stored (Powertools deletes the record when the function raises).
"""

import hashlib
import json
from collections.abc import Callable
from functools import cache

from metering import aws
from metering.config import settings
from metering.errors import StripeError, idempotency_mismatch, invalid

EXPIRY_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 255


class NotStored(Exception):
    """A response that must reach the caller but not the idempotency store."""

    def __init__(self, response: dict):
        super().__init__(response.get("status"))
        self.response = response


def _mark_replayed(response: dict, _record) -> dict:
    return {**response, "replayed": True}


@cache
def _execute():
    from aws_lambda_powertools.utilities.idempotency import (
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    persistence = DynamoDBPersistenceLayer(
        table_name=settings().idempotency_table, boto3_client=aws.dynamodb()
    )
    config = IdempotencyConfig(
        event_key_jmespath="key",
        payload_validation_jmespath="fingerprint",
        raise_on_no_idempotency_key=True,
        expires_after_seconds=EXPIRY_SECONDS,
        response_hook=_mark_replayed,
    )

    @idempotent_function(
        data_keyword_argument="request", persistence_store=persistence, config=config, key_prefix="stripe"
    )
    def execute(request: dict, produce: Callable[[], dict]) -> dict:
        response = produce()
        if not 200 <= response["status"] < 300:
            raise NotStored(response)
        return response

    return config, execute


def fingerprint(method: str, path: str, params: dict) -> str:
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def run(scope: str, idem_key: str, print_: str, produce: Callable[[], dict], lambda_context) -> dict:
    """Run `produce` (returns {"status", "body", "headers"}) at most once per scope and key."""
    from aws_lambda_powertools.utilities.idempotency.exceptions import (
        IdempotencyAlreadyInProgressError,
        IdempotencyPersistenceLayerError,
        IdempotencyValidationError,
    )

    if len(idem_key) > MAX_KEY_LENGTH:
        raise invalid(f"Idempotency-Key must be at most {MAX_KEY_LENGTH} characters.", "Idempotency-Key")
    config, execute = _execute()
    if lambda_context is not None:
        config.register_lambda_context(lambda_context)
    request = {"key": f"{scope}:{idem_key}", "fingerprint": print_}
    try:
        return execute(request=request, produce=produce)
    except NotStored as exc:
        return exc.response
    except IdempotencyValidationError as exc:
        raise idempotency_mismatch(idem_key) from exc
    except IdempotencyAlreadyInProgressError as exc:
        raise StripeError(
            "There is currently another in-progress request using this Idempotent Key (that probably means "
            "you submitted twice, and the other request is still going through): "
            f"{idem_key}. Please try again later.",
            409,
            "idempotency_error",
            "idempotency_key_in_use",
            should_retry=True,
        ) from exc
    except IdempotencyPersistenceLayerError as exc:
        raise StripeError(
            "Could not record the idempotency key; retry.", 500, "api_error", should_retry=True
        ) from exc
