"""The REQUEST authorizer's decision: which account a secret key belongs to, or 401.

Raising "Unauthorized" makes API Gateway answer with the UNAUTHORIZED gateway response,
a Stripe-shaped 401 declared in template.yaml. (The v2 meter event stream is not behind
this authorizer: it takes session tokens, checked by the ingest function itself so an
expired token gets its own error code.)
"""

from metering.accounts import authenticate, secret_key
from metering.errors import StripeError
from metering.observability import logger


class Unauthorized(Exception):
    def __init__(self):
        super().__init__("Unauthorized")


def _allow(principal_id: str, method_arn: str, context: dict) -> dict:
    # Allow every route of this API and stage, so a cached decision covers the caller's next call.
    arn_base = "/".join(method_arn.split("/")[:2])
    return {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": f"{arn_base}/*"}],
        },
        "context": context,
    }


def policy_for(event: dict) -> dict:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    try:
        who = authenticate(secret_key(headers.get("authorization")))
    except StripeError as exc:
        logger.info("denied", extra={"reason": exc.message, "resource": event.get("resource")})
        raise Unauthorized() from exc
    context = {"account_id": who.account_id, "livemode": str(who.livemode).lower()}
    return _allow(
        who.account_id, event.get("methodArn", "arn:aws:execute-api:local:0:api/stage/*/*"), context
    )
