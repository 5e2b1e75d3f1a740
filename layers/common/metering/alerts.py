"""Billing alerts (`/v1/billing/alerts`): a usage threshold on a meter, per customer.

An alert fires once per customer when that customer's aggregate on the meter, over usage
received after the alert was created, reaches `gte` (metering.alert_counters, in the
aggregate function). Items (MAIN_TABLE), in the scope's partition `ACCT#<scope>`:

- `ALERT#<alert id>`: the alert, for retrieve and list.
- `ALERTON#<meter id>#A#<alert id>` (no filter) or `ALERTON#<meter id>#C#<customer>#<alert id>`:
  the same alert where the aggregate function finds it by meter (and customer); deleted
  when the alert is archived.
- `ALERTCAP#<meter id>#A` / `ALERTCAP#<meter id>#C#<customer>`: how many alerts that are
  not archived exist for the (meter, customer filter); at most MAX_PER_SCOPE.
- the meter's event-name claim (`EVNAME#...`) holds `al_all` and `al_cus`, the numbers of
  alerts that are not archived without and with a customer filter. Ingest copies a flag
  from them into every event item, so the aggregate function reads alerts only for
  events of meters that have some.

Create, activate, deactivate and archive each write what they change of these in one
transaction. `since` (receipt sequence, nanoseconds) marks the alert's creation: an event
counts towards it when its receipt sequence is later. `gen` (the activation generation)
grows with every `activate`: an alert fires at most once per customer and generation.
"""

import time
from functools import cache
from typing import Annotated, Literal

from metering import meters, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import StripeError, invalid, not_found
from metering.ids import monotonic_ns, new_id
from metering.keys import key, part

PREFIX = "ALERT#"
MAX_PER_SCOPE = 25
MAX_CUSTOMER = 100  # as for meter events: customer ids are part of keys


@cache
def _models() -> dict[str, type]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request (Aggregate imports this module and never does)."""
    from pydantic import BaseModel, ConfigDict, Field

    class _Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    Text = Annotated[str, Field(max_length=5000)]

    class CustomerFilter(_Strict):
        type: Literal["customer"]
        customer: Annotated[str, Field(min_length=1, max_length=MAX_CUSTOMER)]

    class UsageThreshold(_Strict):
        gte: Annotated[wire.WireInt, Field(gt=0)]
        meter: Annotated[str, Field(min_length=1, max_length=5000)]
        recurrence: Literal["one_time"]
        filters: Annotated[list[CustomerFilter], Field(max_length=1)] | None = None

    class AlertCreate(_Strict):
        alert_type: Literal["usage_threshold"]
        title: Annotated[str, Field(min_length=1, max_length=256)]
        usage_threshold: UsageThreshold
        expand: list[Text] | None = None

    class AlertList(_Strict):
        alert_type: Literal["usage_threshold"] | None = None
        meter: Text | None = None
        limit: wire.WireInt = Field(default=10, ge=1, le=100)
        starting_after: Text | None = None
        ending_before: Text | None = None
        expand: list[Text] | None = None

    return {
        "CustomerFilter": CustomerFilter,
        "UsageThreshold": UsageThreshold,
        "AlertCreate": AlertCreate,
        "AlertList": AlertList,
    }


__getattr__ = wire.lazy_models(
    __name__,
    _models,
    (
        "CustomerFilter",
        "UsageThreshold",
        "AlertCreate",
        "AlertList",
    ),
)


def _pk(scope: str) -> str:
    return key("ACCT", scope)


def watch_prefix(meter_id: str, customer: str | None) -> str:
    """Sort key prefix of the alerts of a meter without a filter (None) or for one customer."""
    if customer is None:
        return key("ALERTON", meter_id, "A", "")
    return key("ALERTON", meter_id, "C", part(customer), "")


def _watch_sk(item: dict) -> str:
    return watch_prefix(item["meter"], item.get("customer")) + item["id"]


def _cap_sk(item: dict) -> str:
    return watch_prefix(item["meter"], item.get("customer")).replace("ALERTON#", "ALERTCAP#", 1).rstrip("#")


def claim_attribute(item: dict) -> str:
    return "al_cus" if item.get("customer") is not None else "al_all"


def to_object(item: dict) -> dict:
    """The Stripe `billing.alert`."""
    customer = item.get("customer")
    return {
        "id": item["id"],
        "object": "billing.alert",
        "alert_type": "usage_threshold",
        "livemode": bool(item["livemode"]),
        "status": item["status"],
        "title": item["title"],
        "usage_threshold": {
            "filters": [{"customer": customer, "type": "customer"}] if customer is not None else None,
            "gte": int(item["gte"]),
            "meter": item["meter"],
            "recurrence": "one_time",
        },
    }


def _missing(alert_id: str) -> StripeError:
    return not_found(f"No such billing alert: '{wire.clip(alert_id)}'")


def find(scope: str, alert_id: str) -> dict | None:
    if not alert_id.startswith("alrt_") or len(alert_id) > 64:
        return None
    return store.get(settings().main_table, _pk(scope), PREFIX + alert_id, consistent=True)


def _load(who: Principal, alert_id: str) -> dict:
    item = find(who.scope, alert_id)
    if item is None:
        raise _missing(alert_id)
    return item


def _put(item: dict, condition: str, values: dict | None = None) -> dict:
    put = {"TableName": settings().main_table, "Item": store.to_item(item), "ConditionExpression": condition}
    if "#s" in condition:
        put["ExpressionAttributeNames"] = {"#s": "status"}
    if values:
        put["ExpressionAttributeValues"] = store.values(values)
    return {"Put": put}


def _counts(item: dict, delta: int, cap: bool) -> list[dict]:
    """Update the (meter, filter) cap and the claim's alert count by `delta`."""
    table, pk = settings().main_table, _pk(item["scope"])
    attribute = claim_attribute(item)
    cap_update = {
        "TableName": table,
        "Key": store.to_item({"pk": pk, "sk": _cap_sk(item)}),
        "UpdateExpression": "SET n = if_not_exists(n, :zero) + :d",
        "ExpressionAttributeValues": store.values({":zero": 0, ":d": delta}),
    }
    if cap:
        cap_update["ConditionExpression"] = "attribute_not_exists(n) OR n < :max"
        cap_update["ExpressionAttributeValues"] = store.values(
            {":zero": 0, ":d": delta, ":max": MAX_PER_SCOPE}
        )
    claim_update = {
        "TableName": table,
        "Key": store.to_item({"pk": pk, "sk": meters.name_key(item["event_name"])}),
        "UpdateExpression": f"SET {attribute} = if_not_exists({attribute}, :zero) + :d",
        "ConditionExpression": "meter_id = :mid",
        "ExpressionAttributeValues": store.values({":zero": 0, ":d": delta, ":mid": item["meter"]}),
    }
    return [{"Update": cap_update}, {"Update": claim_update}]


def _busy() -> StripeError:
    return StripeError(
        "This alert is being changed by another request right now; retry.",
        429,
        "invalid_request_error",
        "lock_timeout",
        should_retry=True,
    )


def create(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["AlertCreate"], params)
    threshold = spec.usage_threshold
    meter = meters.find(who, threshold.meter, consistent=True)
    if meter is None:
        raise not_found(f"No such billing meter: '{wire.clip(threshold.meter)}'", "usage_threshold[meter]")
    if meter["formula"] == "last":
        raise invalid(
            "Invalid usage_threshold[meter]: alerts watch meters whose formula is sum or count"
            " (a last meter's value is not a running total).",
            "usage_threshold[meter]",
        )
    customer = threshold.filters[0].customer if threshold.filters else None
    if customer is not None and (not customer.isprintable() or customer.strip() == ""):
        raise invalid(
            "Invalid usage_threshold[filters][0][customer]: must be printable text.",
            "usage_threshold[filters][0][customer]",
        )
    alert_id = new_id("alrt")
    item = {
        "pk": _pk(who.scope),
        "sk": PREFIX + alert_id,
        "id": alert_id,
        "scope": who.scope,
        "livemode": who.livemode,
        "title": spec.title,
        "status": "active",
        "gte": threshold.gte,
        "meter": meter["id"],
        "event_name": meter["event_name"],
        "formula": meter["formula"],
        "customer": customer,
        "since": f"{monotonic_ns():020d}",
        "gen": 1,
        "created": int(time.time()),
    }
    new = "attribute_not_exists(pk)"
    operations = [_put(item, new), _put({**item, "sk": _watch_sk(item)}, new), *_counts(item, 1, cap=True)]
    for _ in range(5):
        reasons = store.transact(operations)
        if not reasons:
            return to_object(item)
        if reasons[2] == "ConditionalCheckFailed":
            raise invalid(
                f"A meter can have at most {MAX_PER_SCOPE} alerts for each customer filter"
                f" (and {MAX_PER_SCOPE} without one); archive one first.",
                "usage_threshold[meter]",
            )
        time.sleep(0.02)
    raise _busy()


def retrieve(who: Principal, alert_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    return to_object(_load(who, alert_id))


def list_alerts(who: Principal, params: dict) -> dict:
    """Active and inactive alerts (not archived ones), newest first."""
    spec = wire.validate(_models()["AlertList"], params)
    if spec.starting_after and spec.ending_before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )
    items, has_more = store.page(
        settings().main_table,
        _pk(who.scope),
        PREFIX,
        spec.limit,
        spec.starting_after,
        spec.ending_before,
        keep=lambda item: item["status"] != "archived" and spec.meter in (None, item["meter"]),
    )
    return wire.list_object("/v1/billing/alerts", [to_object(i) for i in items], has_more)


def change(who: Principal, alert_id: str, params: dict, action: str) -> dict:
    """`activate`, `deactivate` or `archive`.

    Activating re-arms the alert (a new generation, so it may fire again for customers it
    already fired for), whatever its status; deactivating an inactive alert and archiving an
    archived one change nothing; an archived alert cannot be activated or deactivated."""
    wire.reject_unknown(params, {"expand"})
    for _ in range(8):
        item = _load(who, alert_id)
        status = item["status"]
        if status == "archived" and action != "archive":
            raise invalid(f"The alert {alert_id} is archived: it cannot be {action}d.", "id")
        if (action, status) in (("deactivate", "inactive"), ("archive", "archived")):
            return to_object(item)
        if action == "archive":
            changed = {**item, "status": "archived"}
        elif action == "deactivate":
            changed = {**item, "status": "inactive"}
        else:
            changed = {**item, "status": "active", "gen": int(item["gen"]) + 1}
        same = "#s = :status AND gen = :gen"
        values = {":status": status, ":gen": int(item["gen"])}
        operations = [_put(changed, same, values)]
        watch = {**changed, "sk": _watch_sk(item)}
        if action == "archive":
            operations.append(
                {
                    "Delete": {
                        "TableName": settings().main_table,
                        "Key": store.to_item({"pk": item["pk"], "sk": _watch_sk(item)}),
                    }
                }
            )
            operations += _counts(item, -1, cap=False)
        else:
            operations.append(_put(watch, "attribute_exists(pk)"))
        if not store.transact(operations):
            return to_object(changed)
        time.sleep(0.02)  # changed concurrently: read it again
    raise _busy()
