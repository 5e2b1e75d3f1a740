"""Stripe v1 snapshot events of billing (`customer.created`, `invoice.finalized`, ...).

Envelope, storage, publishing and reads are metering.snapshot_events (shared with the
billing alerts' `billing.alert.triggered`): an event is written in the same transaction
as the change it reports (so a change and its event exist together or not at all,
however often a run is retried), then published: put on the EventBridge bus and
enqueued for the webhook endpoints that take its type, best effort. `GET /v1/events`
lists them newest first for 30 days, with their current `pending_webhooks`.
"""

from functools import cache
from typing import Annotated, Any

from billing import storage
from billing.params import check_cursors, created_filter, in_range
from metering import snapshot_events, wire
from metering.accounts import Principal
from metering.errors import invalid, not_found

Pending = snapshot_events.Pending  # add(type, obj, previous) -> transaction Put; publish() after the commit


def for_principal(who: Principal) -> Pending:
    return snapshot_events.for_principal(who)


def changed(before: dict, after: dict) -> dict:
    """Stripe's `previous_attributes`: the old values of the top-level fields that changed."""
    return {k: before.get(k) for k in after if before.get(k) != after.get(k)}


def save_update(who: Principal, item: dict, version: int, type_: str, before: dict, after: dict) -> bool:
    """Write an object's new state over version `version` together with its `type_` event
    (`previous_attributes` from `before`), then publish the event; False (nothing written)
    when the object changed meanwhile, for the caller to read it again."""
    pending = for_principal(who)
    try:
        storage.transact(
            [storage.put_versioned(item, version), pending.add(type_, after, changed(before, after))]
        )
    except storage.Conflict:
        return False
    pending.publish()
    return True


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request."""
    from pydantic import Field

    from billing.params import ListParams

    class EventList(ListParams):
        type: Annotated[str, Field(max_length=200)] | None = None
        types: list[Annotated[str, Field(max_length=200)]] | None = None
        created: Any = None

    return {"EventList": EventList}


_MODEL_NAMES = ("EventList",)


__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def _matches(pattern: str, type_: str) -> bool:
    if pattern.endswith("*"):
        return type_.startswith(pattern[:-1])
    return type_ == pattern


def list_events(who: Principal, params: dict) -> dict:
    spec = wire.validate(_models()["EventList"], params)
    check_cursors(spec)
    if spec.type and spec.types:
        raise invalid(
            "You may only specify one of these parameters: type, types.", "types", "parameters_exclusive"
        )
    if spec.types is not None and len(spec.types) > 20:
        raise invalid("Invalid types: at most 20 event types are allowed.", "types")
    span = created_filter(spec.created)
    patterns = [spec.type] if spec.type else spec.types

    def keep(item: dict) -> bool:
        if patterns and not any(_matches(p, item["type"]) for p in patterns):
            return False
        return in_range(int(item["created"]), span)

    items, has_more = snapshot_events.page(
        who.scope, spec.limit, spec.starting_after, spec.ending_before, keep
    )
    return wire.list_object("/v1/events", [snapshot_events.load(i) for i in items], has_more)


def retrieve(who: Principal, event_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    event = snapshot_events.get(who.scope, event_id)
    if event is None:
        raise not_found(f"No such event: '{wire.clip(event_id)}'")
    return event
