"""Meter event adjustments: cancel one event by identifier within 24 hours of receipt.

A cancel is one conditional write on the stored event (right account and event name,
received less than 24 hours ago, not cancelled yet). A pre-aggregated event that still
holds its window is cancelled together with its slot in one transaction, conditioned on
the slot still holding that very event, so the window's value disappears; one already
replaced changes nothing. Rollups follow through the events table's stream, so a cancel
is subtracted exactly once, and a second cancel changes nothing.
"""

from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from botocore.exceptions import ClientError

from metering import aws, clock, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import StripeError, invalid, retryable
from metering.event_store import event_key
from metering.ids import new_id
from metering.notifications import rfc3339

if TYPE_CHECKING:
    from pydantic import BaseModel

CANCEL_WINDOW_SECONDS = 24 * 3600
ATTEMPTS = 5
PARAM = "cancel[identifier]"


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request."""
    from pydantic import BaseModel, ConfigDict, Field

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Cancel(_Strict):
        identifier: Annotated[str, Field(min_length=1, max_length=100)]

    class AdjustmentCreate(_Strict):
        event_name: Annotated[str, Field(min_length=1, max_length=100)]
        type: Literal["cancel"] = "cancel"
        cancel: Cancel
        expand: list[str] | None = None

    return {"_Strict": _Strict, "Cancel": Cancel, "AdjustmentCreate": AdjustmentCreate}


_MODEL_NAMES = (
    "_Strict",
    "Cancel",
    "AdjustmentCreate",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def _unknown(identifier: str, event_name: str) -> StripeError:
    return invalid(
        f"No meter event with identifier '{identifier}' was found for event_name '{event_name}'.",
        PARAM,
        "meter_event_not_found",
    )


def _cancellable(item: dict | None, spec: "BaseModel", now: int) -> bool:
    """Raise the reason an event can't be cancelled; False when it already is."""
    identifier = spec.cancel.identifier
    if item is None or item.get("t") not in ("raw", "pre"):
        raise _unknown(identifier, spec.event_name)
    if item["en"] != spec.event_name:
        raise invalid(
            f"Meter event '{identifier}' was recorded for event_name '{item['en']}', "
            f"not '{spec.event_name}'.",
            "event_name",
            "meter_event_name_mismatch",
        )
    if item["st"] == "cancelled":
        return False
    if int(item["rcv"]) < now - CANCEL_WINDOW_SECONDS:
        raise invalid(
            f"Meter event '{identifier}' was received at {int(item['rcv'])}, more than 24 hours ago; "
            "only events received in the last 24 hours can be cancelled.",
            PARAM,
            "meter_event_cancel_window_expired",
        )
    return True


def _update(table: str, key: dict, condition: str, values: dict) -> dict:
    return {
        "TableName": table,
        "Key": store.to_item(key),
        "UpdateExpression": "SET st = :cancelled, cat = :now",
        "ConditionExpression": condition,
        "ExpressionAttributeValues": store.values(values),
    }


def _write(table: str, item: dict, spec: "BaseModel", now: int) -> None:
    """The conditional cancel; raises ClientError when the event changed since it was read."""
    values = {":cancelled": "cancelled", ":now": now, ":en": spec.event_name, ":st": item["st"]}
    values[":cutoff"] = now - CANCEL_WINDOW_SECONDS
    own = _update(
        table,
        event_key(item["scope"], spec.cancel.identifier),
        "en = :en AND st = :st AND rcv >= :cutoff",
        values,
    )
    slot = store.get(table, item["slot"], "SLOT", consistent=True) if item["t"] == "pre" else None
    if slot is None or slot.get("ident") != spec.cancel.identifier or slot.get("st") != "ok":
        aws.dynamodb().update_item(**own)
        return
    slot_values = {
        ":cancelled": "cancelled",
        ":now": now,
        ":ident": spec.cancel.identifier,
        ":seq": slot["seq"],
        ":ok": "ok",
    }
    held = _update(
        table, {"pk": item["slot"], "sk": "SLOT"}, "ident = :ident AND seq = :seq AND st = :ok", slot_values
    )
    aws.dynamodb().transact_write_items(TransactItems=[{"Update": own}, {"Update": held}])


def cancel(who: Principal, spec: "BaseModel") -> None:
    table = settings().events_table
    key = event_key(who.scope, spec.cancel.identifier)
    for _ in range(ATTEMPTS):
        now = int(clock.now())
        item = store.get(table, key["pk"], key["sk"], consistent=True)
        if not _cancellable(item, spec, now):
            return
        try:
            _write(table, item, spec, now)
            return
        except ClientError as exc:
            if store.error_code(exc) not in (
                "ConditionalCheckFailedException",
                "TransactionCanceledException",
            ):
                store.raise_retryable(exc)
                raise
            # the event or its window changed since it was read: read again and decide again
    raise retryable("The meter event changed while it was being cancelled; please retry.")


def _spec(params: dict) -> "BaseModel":
    if "cancel" not in params and params.get("type", "cancel") == "cancel":
        raise invalid("Missing required param: cancel[identifier].", PARAM, "parameter_missing")
    return wire.validate(_models()["AdjustmentCreate"], params)


def create_v1(who: Principal, params: dict) -> dict:
    spec = _spec(params)
    cancel(who, spec)
    return {
        "object": "billing.meter_event_adjustment",
        "livemode": who.livemode,
        "status": "pending",
        "event_name": spec.event_name,
        "type": spec.type,
        "cancel": {"identifier": spec.cancel.identifier},
    }


def create_v2(who: Principal, params: dict) -> dict:
    spec = _spec(params)
    cancel(who, spec)
    return {
        "id": new_id("mtradj"),
        "object": "v2.billing.meter_event_adjustment",
        "created": rfc3339(clock.now()),
        "livemode": who.livemode,
        "status": "pending",
        "event_name": spec.event_name,
        "type": spec.type,
        "cancel": {"identifier": spec.cancel.identifier},
    }
