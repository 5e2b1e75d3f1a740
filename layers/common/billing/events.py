"""Stripe v1 snapshot events (`customer.created`, `invoice.finalized`, ...).

An event is written in the same transaction as the change it reports (so a change and
its event exist together or not at all, however often a run is retried), then put on
the EventBridge bus, best effort, like metering's notifications. `GET /v1/events`
lists them newest first for 30 days.
"""

import json
import time
from decimal import Decimal
from typing import Annotated, Any

from botocore.exceptions import ClientError
from pydantic import Field

from billing import storage
from billing.params import ListParams, check_cursors, created_filter, in_range
from metering import aws, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import invalid, not_found
from metering.ids import new_id
from metering.observability import logger

API_VERSION = "2026-10-28.endive"
RETENTION_SECONDS = 30 * 24 * 3600
SOURCE = "metering.billing"
PREFIX = "EVT#"


class Pending:
    """Events written by a transaction, published once it committed."""

    def __init__(self, scope: str, account_id: str, livemode: bool):
        self.scope, self.account_id, self.livemode = scope, account_id, livemode
        self.events: list[dict] = []

    def add(self, type_: str, obj: dict, previous: dict | None = None) -> dict:
        """The transaction Put of one new event about `obj` (its state after the change)."""
        now = int(time.time())
        data: dict = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        return storage.put_new(
            {
                "pk": storage.scope_pk(self.scope),
                "sk": PREFIX + event["id"],
                "type": type_,
                "created": now,
                "doc": wire.dumps(event),
                "expires_at": now + RETENTION_SECONDS,
            }
        )

    def publish(self) -> None:
        """Put the committed events on the bus (the stored copies are the record)."""
        for start in range(0, len(self.events), 10):
            entries = [
                {
                    "Source": SOURCE,
                    "DetailType": event["type"],
                    "Detail": wire.dumps({"account": self.account_id, "event": event}),
                    "EventBusName": settings().event_bus,
                }
                for event in self.events[start : start + 10]
            ]
            try:
                aws.events().put_events(Entries=entries)
            except ClientError:
                logger.exception("EventBridge put_events failed for billing events")
        self.events = []


def for_principal(who: Principal) -> Pending:
    return Pending(who.scope, who.account_id, who.livemode)


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


def _load(item: dict) -> dict:
    return json.loads(item["doc"], parse_float=Decimal)


class EventList(ListParams):
    type: Annotated[str, Field(max_length=200)] | None = None
    types: list[Annotated[str, Field(max_length=200)]] | None = None
    created: Any = None


def _matches(pattern: str, type_: str) -> bool:
    if pattern.endswith("*"):
        return type_.startswith(pattern[:-1])
    return type_ == pattern


def list_events(who: Principal, params: dict) -> dict:
    spec: EventList = wire.validate(EventList, params)
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

    items, has_more = storage.page_of(who.scope, PREFIX, spec, keep)
    return wire.list_object("/v1/events", [_load(i) for i in items], has_more)


def retrieve(who: Principal, event_id: str, params: dict) -> dict:
    wire.reject_unknown(params, {"expand"})
    item = storage.get(who.scope, PREFIX + event_id, consistent=False)
    if item is None:
        raise not_found(f"No such event: '{event_id}'")
    return _load(item)
