"""Billing meters: configuration objects, one per event name and account."""

import re
import time
from functools import cache
from typing import Annotated, Literal

from botocore.exceptions import ClientError

from metering import aws, notifications, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import invalid, not_found, unknown
from metering.ids import new_id
from metering.keys import key, part

METER_PREFIX = key("METER", "")
METER_ID = re.compile(r"mtr_[0-9a-f]{24}")


@cache
def _models() -> dict[str, type]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (Aggregate and BulkUpload import this module and never do)."""
    from pydantic import AfterValidator, BaseModel, ConfigDict, Field

    def _printable(value: str) -> str:
        if not value.isprintable():
            raise ValueError("must contain only printable characters")
        return value

    Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_printable)]
    DisplayName = Annotated[str, Field(min_length=1, max_length=250), AfterValidator(_printable)]

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Aggregation(_Strict):
        formula: Literal["sum", "count", "last"]

    class CustomerMapping(_Strict):
        type: Literal["by_id"] = "by_id"
        event_payload_key: Name = "stripe_customer_id"

    class ValueSettings(_Strict):
        event_payload_key: Name = "value"

    class MeterCreate(_Strict):
        display_name: DisplayName
        event_name: Name
        default_aggregation: Aggregation
        customer_mapping: CustomerMapping = CustomerMapping()
        value_settings: ValueSettings = ValueSettings()
        event_time_window: Literal["hour", "day"] | None = None
        expand: list[str] | None = None

    class MeterUpdate(_Strict):
        display_name: DisplayName | None = None
        expand: list[str] | None = None

    class MeterList(_Strict):
        status: Literal["active", "inactive"] | None = None
        limit: wire.WireInt = Field(default=10, ge=1, le=100)
        starting_after: Annotated[str, Field(max_length=5000)] | None = None
        ending_before: Annotated[str, Field(max_length=5000)] | None = None
        expand: list[str] | None = None

    return {
        "Aggregation": Aggregation,
        "CustomerMapping": CustomerMapping,
        "ValueSettings": ValueSettings,
        "MeterCreate": MeterCreate,
        "MeterUpdate": MeterUpdate,
        "MeterList": MeterList,
    }


__getattr__ = wire.lazy_models(
    __name__,
    _models,
    (
        "Aggregation",
        "CustomerMapping",
        "ValueSettings",
        "MeterCreate",
        "MeterUpdate",
        "MeterList",
    ),
)


def to_object(item: dict) -> dict:
    """The Stripe `billing.meter` for a stored meter."""
    return {
        "id": item["id"],
        "object": "billing.meter",
        "created": int(item["created"]),
        "customer_mapping": {"event_payload_key": item["customer_key"], "type": "by_id"},
        "default_aggregation": {"formula": item["formula"]},
        "display_name": item["display_name"],
        "event_name": item["event_name"],
        "event_time_window": item.get("event_time_window"),
        "livemode": bool(item["livemode"]),
        "status": item["status"],
        "status_transitions": {
            "deactivated_at": int(item["deactivated_at"]) if item.get("deactivated_at") else None
        },
        "updated": int(item["updated"]),
        "value_settings": {"event_payload_key": item["value_key"]},
    }


INGEST_FIELDS = ("id", "status", "formula", "customer_key", "value_key", "event_time_window", "livemode")


def ingest_view(item: dict) -> dict:
    """What validating and storing a meter event needs of its meter (kept on the name claim)."""
    return {name: item.get(name) for name in INGEST_FIELDS}


def _pk(who: Principal) -> str:
    return key("ACCT", who.scope)


def name_key(event_name: str) -> str:
    return key("EVNAME", part(event_name))


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["MeterCreate"], params)
    now = int(time.time())
    meter_id = new_id("mtr")
    item = {
        "pk": _pk(who),
        "sk": METER_PREFIX + meter_id,
        "id": meter_id,
        "account_id": who.account_id,
        "scope": who.scope,
        "created": now,
        "updated": now,
        "display_name": spec.display_name,
        "event_name": spec.event_name,
        "formula": spec.default_aggregation.formula,
        "customer_key": spec.customer_mapping.event_payload_key,
        "value_key": spec.value_settings.event_payload_key,
        "event_time_window": spec.event_time_window,
        "livemode": who.livemode,
        "status": "active",
    }
    claim = {
        "pk": _pk(who),
        "sk": name_key(spec.event_name),
        "meter_id": meter_id,
        "meter": ingest_view(item),
    }
    new = "attribute_not_exists(pk)"
    try:
        aws.dynamodb().transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": settings().main_table,
                        "Item": store.to_item(claim),
                        "ConditionExpression": new,
                    }
                },
                {
                    "Put": {
                        "TableName": settings().main_table,
                        "Item": store.to_item(item),
                        "ConditionExpression": new,
                    }
                },
            ]
        )
    except ClientError as exc:
        reasons = exc.response.get("CancellationReasons") or []
        if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
            raise invalid(
                f"A meter with event_name '{spec.event_name}' already exists.",
                "event_name",
                "meter_event_name_exists",
            ) from exc
        store.raise_retryable(exc)
        raise
    meter = to_object(item)
    notifications.publish(
        who.account_id,
        who.livemode,
        "billing.meter.created",
        notifications.meter_ref(meter_id),
        {"object": meter},
    )
    return meter


def _missing(meter_id: str, param: str = "id"):
    return not_found(f"No such billing meter: '{wire.clip(meter_id)}'", param)


def find(who: Principal, meter_id: str, consistent: bool = False) -> dict | None:
    """The caller's meter, or None (strings that are no meter id are never looked up)."""
    if not METER_ID.fullmatch(meter_id):
        return None
    return store.get(settings().main_table, _pk(who), METER_PREFIX + meter_id, consistent)


def load(who: Principal, meter_id: str, consistent: bool = False) -> dict:
    item = find(who, meter_id, consistent)
    if item is None:
        raise _missing(meter_id)
    return item


def retrieve(who: Principal, meter_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(load(who, meter_id))


def _update(
    who: Principal, meter_id: str, expression: str, names: dict, vals: dict, condition: str
) -> dict | None:
    """Conditional update of an existing meter; None when `condition` does not hold."""
    extra = {"ExpressionAttributeNames": names} if names else {}
    try:
        out = aws.dynamodb().update_item(
            TableName=settings().main_table,
            Key=store.to_item({"pk": _pk(who), "sk": METER_PREFIX + meter_id}),
            UpdateExpression=expression,
            ConditionExpression=f"attribute_exists(pk) AND ({condition})",
            ExpressionAttributeValues=store.values(vals),
            ReturnValues="ALL_NEW",
            **extra,
        )
    except ClientError as exc:
        if store.error_code(exc) == "ConditionalCheckFailedException":
            load(who, meter_id, consistent=True)  # 404 when it does not exist
            return None
        store.raise_retryable(exc)
        raise
    return store.from_item(out["Attributes"])


def update(who: Principal, meter_id: str, params: dict) -> dict:
    for name in params:
        if name not in _models()["MeterUpdate"].model_fields:
            raise unknown(name)
    spec = wire.validate(_models()["MeterUpdate"], params)
    if not METER_ID.fullmatch(meter_id):
        raise _missing(meter_id)
    if spec.display_name is None:
        return to_object(load(who, meter_id))
    item = _update(
        who,
        meter_id,
        "SET display_name = :n, updated = :now",
        {},
        {":n": spec.display_name, ":now": int(time.time())},
        "attribute_exists(sk)",
    )
    meter = to_object(item)
    notifications.publish(
        who.account_id,
        who.livemode,
        "billing.meter.updated",
        notifications.meter_ref(meter_id),
        {"object": meter},
    )
    return meter


def set_status(who: Principal, meter_id: str, params: dict, active: bool) -> dict:
    """Deactivate or reactivate; doing it twice changes nothing and publishes nothing."""
    wire.reject_unknown(params, {"expand"})
    now = int(time.time())
    target, source = ("active", "inactive") if active else ("inactive", "active")
    deactivated = None if active else now
    item = _set_status(who, meter_id, target, source, deactivated, now)
    if item is None:
        return to_object(load(who, meter_id, consistent=True))
    meter = to_object(item)
    type_ = "billing.meter.reactivated" if active else "billing.meter.deactivated"
    notifications.publish(
        who.account_id, who.livemode, type_, notifications.meter_ref(meter_id), {"object": meter}
    )
    return meter


def _set_status(
    who: Principal, meter_id: str, target: str, source: str, deactivated, now: int
) -> dict | None:
    """Move a meter and its name claim from `source` to `target` status in one transaction,
    so the next event sees the change; None when the meter is not in `source` status."""
    item = load(who, meter_id, consistent=True)
    if item["status"] != source:
        return None
    table = settings().main_table
    names = {"#s": "status"}
    meter_update = {
        "TableName": table,
        "Key": store.to_item({"pk": _pk(who), "sk": METER_PREFIX + meter_id}),
        "UpdateExpression": "SET #s = :target, deactivated_at = :d, updated = :now",
        "ConditionExpression": "#s = :source",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": store.values(
            {":target": target, ":source": source, ":d": deactivated, ":now": now}
        ),
    }
    claim_update = {
        "TableName": table,
        "Key": store.to_item({"pk": _pk(who), "sk": name_key(item["event_name"])}),
        "UpdateExpression": "SET #m.#s = :target",
        "ConditionExpression": "meter_id = :id",
        "ExpressionAttributeNames": {**names, "#m": "meter"},
        "ExpressionAttributeValues": store.values({":target": target, ":id": meter_id}),
    }
    try:
        aws.dynamodb().transact_write_items(
            TransactItems=[{"Update": meter_update}, {"Update": claim_update}]
        )
    except ClientError as exc:
        store.raise_retryable(exc)  # a conflict or throttling: retry; nothing changed
        if store.error_code(exc) == "TransactionCanceledException":
            return None  # changed concurrently: the caller answers with the meter as it is
        raise
    return {**item, "status": target, "deactivated_at": deactivated, "updated": now}


def list_meters(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["MeterList"], params)
    if spec.starting_after and spec.ending_before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
    for param in ("starting_after", "ending_before"):  # a cursor must name one of the caller's meters
        cursor = getattr(spec, param)
        if cursor is not None and find(who, cursor) is None:
            raise _missing(cursor, param)
    items, has_more = store.page(
        settings().main_table,
        _pk(who),
        METER_PREFIX,
        spec.limit,
        spec.starting_after,
        spec.ending_before,
        keep=lambda item: spec.status is None or item["status"] == spec.status,
    )
    return wire.list_object("/v1/billing/meters", [to_object(i) for i in items], has_more)
