"""Webhook endpoints: where v1 snapshot events are POSTed (`/v1/webhook_endpoints`).

Items (MAIN_TABLE), in the scope's partition `ACCT#<scope>` (account and mode):

- `WHE#<endpoint id>`: the endpoint: url, enabled events, description, metadata, status,
  the signing secret (returned only by create), a version for conditional updates.
- `WHCOUNT`: how many endpoints the scope has; changed in the same transaction as a create
  (at most MAX_ENDPOINTS, as at Stripe) or a delete.

An event is delivered to the endpoints that match its type when it is created
(`matching`, read once per publishing transaction); delivery is metering.webhook_delivery.

URLs are checked on create and update, and again before every delivery: http or https
(https in live mode), and every address the host resolves to must be a public one.
Loopback, link-local, private, shared, multicast and reserved addresses are refused
(400 naming `url`), except loopback when `WEBHOOKS_ALLOW_LOOPBACK=1` (the local runner
and the tests set it: their receivers listen on 127.0.0.1).
"""

import ipaddress
import os
import re
import secrets
import socket
import time
from functools import cache
from typing import Annotated, Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from metering import aws, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import StripeError, invalid, not_found
from metering.ids import new_id
from metering.keys import key

PREFIX = "WHE#"
COUNT_SK = "WHCOUNT"
MAX_ENDPOINTS = 16
MAX_URL = 5000
MAX_ENABLED_EVENTS = 256
MAX_METADATA_KEYS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 50, 40, 500
ENDPOINT_ID = re.compile(r"we_[0-9a-f]{24}")
EVENT_TYPE = re.compile(r"(?!v[0-9]+\.)[a-z_]+(\.[a-z_]+)+")


def allow_loopback() -> bool:
    return os.environ.get("WEBHOOKS_ALLOW_LOOPBACK") == "1"


# --- URL safety -------------------------------------------------------------------------


def _refused(reason: str) -> StripeError:
    return invalid(f"Invalid url: {reason}", "url")


def _addresses(host: str, port: int) -> list:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise _refused(f"the host {wire.clip(host, 100)!r} could not be resolved.") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def _public(address) -> bool:
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified or address.is_link_local
    )


def check_url(url: str, livemode: bool) -> str:
    """The URL if events may be sent to it; a 400 naming `url` otherwise."""
    if len(url) > MAX_URL:
        raise invalid(
            f"Invalid url: must be at most {MAX_URL} characters.", "url", "string_length_exceeds_maximum"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refused("not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _refused("must be an http or https URL with a host.")
    addresses = _addresses(parts.hostname, port or (443 if parts.scheme == "https" else 80))
    loopback = bool(addresses) and all(
        a.is_loopback or (a.version == 6 and a.ipv4_mapped is not None and a.ipv4_mapped.is_loopback)
        for a in addresses
    )
    if loopback and allow_loopback():
        return url
    if not addresses or not all(_public(a) for a in addresses):
        raise _refused("webhook endpoints cannot point at loopback, link-local or private addresses.")
    if livemode and parts.scheme != "https":
        raise _refused("live mode webhook endpoints must use https.")
    return url


# --- parameters -------------------------------------------------------------------------


def _flag(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        raise ValueError("must be a boolean (true or false)")
    return value


@cache
def _models() -> dict[str, type]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (WebhookDelivery imports this module and never does)."""
    from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    Text = Annotated[str, Field(max_length=5000)]
    Url = Annotated[str, Field(min_length=1, max_length=MAX_URL)]

    class EndpointCreate(_Strict):
        url: Url
        enabled_events: list[Annotated[str, Field(min_length=1, max_length=200)]]
        description: Text | None = None
        metadata: Any = None
        expand: list[Text] | None = None

    class EndpointUpdate(_Strict):
        url: Url | None = None
        enabled_events: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
        description: Text | None = None
        metadata: Any = None
        disabled: Annotated[bool, BeforeValidator(_flag)] | None = None
        expand: list[Text] | None = None

    class EndpointList(_Strict):
        limit: wire.WireInt = Field(default=10, ge=1, le=100)
        starting_after: Text | None = None
        ending_before: Text | None = None
        expand: list[Text] | None = None

    return {"EndpointCreate": EndpointCreate, "EndpointUpdate": EndpointUpdate, "EndpointList": EndpointList}


__getattr__ = wire.lazy_models(__name__, _models, ("EndpointCreate", "EndpointUpdate", "EndpointList"))


def _enabled_events(values: list[str]) -> list[str]:
    if not values:
        raise invalid("Invalid enabled_events: list at least one event type, or '*'.", "enabled_events")
    if len(values) > MAX_ENABLED_EVENTS:
        raise invalid(f"Invalid enabled_events: at most {MAX_ENABLED_EVENTS} types.", "enabled_events")
    for i, value in enumerate(values):
        if value != "*" and not EVENT_TYPE.fullmatch(value):
            raise invalid(
                f"Invalid enabled_events[{i}]: {wire.clip(value, 100)!r} is not an event type"
                " (snapshot event types such as 'billing.alert.triggered', or '*').",
                f"enabled_events[{i}]",
            )
    return list(dict.fromkeys(values))


def _metadata(value: Any, current: dict | None = None) -> dict[str, str]:
    """Stripe metadata: merged into `current`; "" unsets a key, `metadata=` unsets all."""
    if value is None:
        return dict(current or {})
    if value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid metadata: must be an object of string keys and values.", "metadata")
    out = dict(current or {})
    for k, v in value.items():
        name = f"metadata[{k}]"
        if not k or len(k) > MAX_METADATA_KEY or "[" in k or "]" in k:
            raise invalid(
                f"Invalid {name}: keys are 1 to {MAX_METADATA_KEY} characters without brackets.", name
            )
        if isinstance(v, bool) or not isinstance(v, str | int):
            raise invalid(f"Invalid {name}: must be a string.", name)
        text = str(v)
        if len(text) > MAX_METADATA_VALUE:
            raise invalid(
                f"Invalid {name}: must be at most {MAX_METADATA_VALUE} characters.",
                name,
                "string_length_exceeds_maximum",
            )
        if text == "":
            out.pop(k, None)
        else:
            out[k] = text
    if len(out) > MAX_METADATA_KEYS:
        raise invalid(f"Invalid metadata: at most {MAX_METADATA_KEYS} keys are allowed.", "metadata")
    return out


# --- storage ----------------------------------------------------------------------------


def _pk(scope: str) -> str:
    return key("ACCT", scope)


def to_object(item: dict, with_secret: bool = False) -> dict:
    obj = {
        "id": item["id"],
        "object": "webhook_endpoint",
        "api_version": None,
        "application": None,
        "created": int(item["created"]),
        "description": item.get("description"),
        "enabled_events": list(item["enabled_events"]),
        "livemode": bool(item["livemode"]),
        "metadata": dict(item.get("metadata") or {}),
        "status": item["status"],
        "url": item["url"],
    }
    if with_secret:
        obj["secret"] = item["secret"]
    return obj


def find(scope: str, endpoint_id: str, consistent: bool = True) -> dict | None:
    if not ENDPOINT_ID.fullmatch(endpoint_id):
        return None
    return store.get(settings().main_table, _pk(scope), PREFIX + endpoint_id, consistent)


def _load(who: Principal, endpoint_id: str) -> dict:
    item = find(who.scope, endpoint_id)
    if item is None:
        raise not_found(f"No such webhook endpoint: '{wire.clip(endpoint_id)}'")
    return item


def endpoints_of(scope: str) -> list[dict]:
    """Every endpoint of a scope (at most MAX_ENDPOINTS), oldest first; one query."""
    return list(store.query(settings().main_table, _pk(scope), PREFIX, PREFIX + store.HIGH, True, True))


def matching(endpoints: list[dict], type_: str) -> list[str]:
    """Ids of the enabled endpoints that take events of `type_`."""
    return [
        e["id"]
        for e in endpoints
        if e.get("status") == "enabled" and ("*" in e["enabled_events"] or type_ in e["enabled_events"])
    ]


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["EndpointCreate"], params)
    url = check_url(spec.url, who.livemode)
    events = _enabled_events(spec.enabled_events)
    metadata = _metadata(spec.metadata)
    endpoint_id = new_id("we")
    item = {
        "pk": _pk(who.scope),
        "sk": PREFIX + endpoint_id,
        "id": endpoint_id,
        "created": int(time.time()),
        "url": url,
        "enabled_events": events,
        "description": spec.description or None,
        "metadata": metadata,
        "livemode": who.livemode,
        "status": "enabled",
        "secret": "whsec_" + secrets.token_hex(24),
        "ver": 1,
    }
    table = settings().main_table
    count = {
        "Update": {
            "TableName": table,
            "Key": store.to_item({"pk": _pk(who.scope), "sk": COUNT_SK}),
            "UpdateExpression": "SET n = if_not_exists(n, :zero) + :one",
            "ConditionExpression": "attribute_not_exists(n) OR n < :max",
            "ExpressionAttributeValues": store.values({":zero": 0, ":one": 1, ":max": MAX_ENDPOINTS}),
        }
    }
    put = {
        "Put": {
            "TableName": table,
            "Item": store.to_item(item),
            "ConditionExpression": "attribute_not_exists(pk)",
        }
    }
    for _ in range(5):
        reasons = store.transact([count, put])
        if not reasons:
            return to_object(item, with_secret=True)
        if reasons[0] == "ConditionalCheckFailed":
            raise invalid(
                f"You can have at most {MAX_ENDPOINTS} webhook endpoints in each mode of an account.", "url"
            )
        time.sleep(0.02)
    raise StripeError(
        "Webhook endpoints are being changed concurrently; retry.",
        429,
        code="lock_timeout",
        should_retry=True,
    )


def retrieve(who: Principal, endpoint_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(_load(who, endpoint_id))


def update(who: Principal, endpoint_id: str, params: dict) -> dict:
    spec = wire.validate(_models()["EndpointUpdate"], params)
    for _ in range(5):
        item = _load(who, endpoint_id)
        updated = dict(item)
        if spec.url is not None:
            updated["url"] = check_url(spec.url, who.livemode)
        if spec.enabled_events is not None:
            updated["enabled_events"] = _enabled_events(spec.enabled_events)
        if spec.description is not None:
            updated["description"] = spec.description or None
        if "metadata" in spec.model_fields_set:
            updated["metadata"] = _metadata(
                spec.metadata if spec.metadata is not None else "", item.get("metadata")
            )
        if spec.disabled is not None:
            updated["status"] = "disabled" if spec.disabled else "enabled"
        updated["ver"] = int(item["ver"]) + 1
        try:
            aws.dynamodb().put_item(
                TableName=settings().main_table,
                Item=store.to_item(updated),
                ConditionExpression="ver = :ver",
                ExpressionAttributeValues=store.values({":ver": int(item["ver"])}),
            )
        except ClientError as exc:
            if store.error_code(exc) == "ConditionalCheckFailedException":
                continue  # changed or deleted meanwhile: read it again
            store.raise_retryable(exc)
            raise
        return to_object(updated)
    raise StripeError(
        "This webhook endpoint is being changed concurrently; retry.",
        429,
        code="lock_timeout",
        should_retry=True,
    )


def delete(who: Principal, endpoint_id: str, params: dict) -> dict:
    wire.reject_unknown(params, set())
    _load(who, endpoint_id)
    table = settings().main_table
    reasons = store.transact(
        [
            {
                "Delete": {
                    "TableName": table,
                    "Key": store.to_item({"pk": _pk(who.scope), "sk": PREFIX + endpoint_id}),
                    "ConditionExpression": "attribute_exists(pk)",
                }
            },
            {
                "Update": {
                    "TableName": table,
                    "Key": store.to_item({"pk": _pk(who.scope), "sk": COUNT_SK}),
                    "UpdateExpression": "SET n = n - :one",
                    "ConditionExpression": "n > :zero",
                    "ExpressionAttributeValues": store.values({":zero": 0, ":one": 1}),
                }
            },
        ]
    )
    if reasons:
        raise not_found(f"No such webhook endpoint: '{wire.clip(endpoint_id)}'")
    return {"id": endpoint_id, "object": "webhook_endpoint", "deleted": True}


def list_endpoints(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["EndpointList"], params)
    if spec.starting_after and spec.ending_before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
    items, has_more = store.page(
        settings().main_table, _pk(who.scope), PREFIX, spec.limit, spec.starting_after, spec.ending_before
    )
    return wire.list_object("/v1/webhook_endpoints", [to_object(i) for i in items], has_more)
