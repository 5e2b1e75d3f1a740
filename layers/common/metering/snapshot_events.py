"""Stripe v1 snapshot events (`customer.created`, `billing.alert.triggered`, ...): the
envelope, storage, publishing, and the reads behind `GET /v1/events`.

Items (MAIN_TABLE), in the scope's partition `ACCT#<scope>` (account and mode):

- `V1EVT#<event id>`: `type`, `created`, `doc` (the envelope as JSON, as created), `pw`
  (webhook deliveries still pending), `whp` (string set: the endpoints still to be
  delivered to; absent when none), `expires_at` (30 days).

metering.notifications keeps the v2 thin events (`/v2/core/events`) in the same partition
under `EVT#`: the distinct prefix keeps the two lists apart.

An event is written by the transaction Put `Pending.add` returns, in the same transaction
as the change it reports, so the change and its event exist together or not at all.
`Pending.publish()` runs after the commit: it puts the events on the bus (source
`metering.billing`, best effort) and enqueues one webhook delivery per (event, endpoint)
that matched the event's type when the event was created (`pending_webhooks` is that
count). Each successful or abandoned delivery decrements `pw` once, conditionally
(`settle`), and every read merges the current count into the envelope (`load`).
"""

import json
import re
import time
from collections.abc import Callable
from decimal import Decimal

from botocore.exceptions import ClientError

from metering import aws, store, webhook_queue, webhooks, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import not_found
from metering.ids import new_id
from metering.keys import key
from metering.observability import logger

API_VERSION = "2026-10-28.endive"
RETENTION_SECONDS = 30 * 24 * 3600
SOURCE = "metering.billing"
PREFIX = "V1EVT#"
BUS_BATCH = 10
EVENT_ID = re.compile(r"evt_[0-9a-f]{24}")


def scope_pk(scope: str) -> str:
    return key("ACCT", scope)


def event_sk(event_id: str) -> str:
    return PREFIX + event_id


class Pending:
    """Events written by a transaction, published once it committed (make one per attempt)."""

    def __init__(self, scope: str, account_id: str, livemode: bool):
        self.scope, self.account_id, self.livemode = scope, account_id, livemode
        self.events: list[dict] = []
        self.targets: dict[str, list[str]] = {}  # event id -> endpoint ids to deliver to
        self._endpoints: list[dict] | None = None

    def endpoints(self) -> list[dict]:
        """The scope's webhook endpoints, read once per Pending (one query)."""
        if self._endpoints is None:
            self._endpoints = webhooks.endpoints_of(self.scope)
        return self._endpoints

    def add(self, type_: str, obj: dict, previous: dict | None = None, request: dict | None = None) -> dict:
        """The transaction Put of one new event about `obj` (its state after the change)."""
        now = int(time.time())
        data: dict = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        targets = webhooks.matching(self.endpoints(), type_)
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            "data": data,
            "livemode": self.livemode,
            "pending_webhooks": len(targets),
            "request": request or {"id": None, "idempotency_key": None},
            "type": type_,
        }
        self.events.append(event)
        self.targets[event["id"]] = targets
        item = {
            "pk": scope_pk(self.scope),
            "sk": event_sk(event["id"]),
            "type": type_,
            "created": now,
            "doc": wire.dumps(event),
            "pw": len(targets),
            "whp": set(targets) or None,
            "expires_at": now + RETENTION_SECONDS,
        }
        return {
            "Put": {
                "TableName": settings().main_table,
                "Item": store.to_item(item),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def publish(self) -> None:
        """Put the committed events on the bus and enqueue their webhook deliveries (both
        best effort: the stored events are the record)."""
        put_on_bus(self.account_id, self.events)
        messages = [
            webhook_queue.message(self.scope, event["id"], endpoint_id, first=event["created"])
            for event in self.events
            for endpoint_id in self.targets.get(event["id"], [])
        ]
        if messages:
            webhook_queue.send([(m, 0) for m in messages])
        self.events, self.targets = [], {}


def for_principal(who: Principal) -> Pending:
    return Pending(who.scope, who.account_id, who.livemode)


def put_on_bus(account_id: str, events: list[dict]) -> None:
    for start in range(0, len(events), BUS_BATCH):
        entries = [
            {
                "Source": SOURCE,
                "DetailType": event["type"],
                "Detail": wire.dumps({"account": account_id, "event": event}),
                "EventBusName": settings().event_bus,
            }
            for event in events[start : start + BUS_BATCH]
        ]
        try:
            out = aws.events().put_events(Entries=entries)
            if out.get("FailedEntryCount"):
                logger.error("EventBridge refused snapshot events", extra={"failed": out["FailedEntryCount"]})
        except ClientError:
            logger.exception("EventBridge put_events failed for snapshot events")


def load(item: dict) -> dict:
    """The event of a stored item, with its current `pending_webhooks`."""
    event = json.loads(item["doc"], parse_float=Decimal)
    event["pending_webhooks"] = int(item.get("pw", 0))
    return event


def get_item(scope: str, event_id: str, consistent: bool = False) -> dict | None:
    if not EVENT_ID.fullmatch(event_id):
        return None  # never looked up: any string of any length is simply unknown
    return store.get(settings().main_table, scope_pk(scope), event_sk(event_id), consistent)


def get(scope: str, event_id: str, consistent: bool = False) -> dict | None:
    """The event (current `pending_webhooks`), or None."""
    item = get_item(scope, event_id, consistent)
    return load(item) if item is not None else None


def page(
    scope: str,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
    keep: Callable[[dict], bool] = lambda item: True,
) -> tuple[list[dict], bool]:
    """Newest-first page of stored items (`keep` sees `type` and `created`); `load` each.

    A cursor must name one of the scope's events: anything else is a 404 naming it."""
    for param, cursor in (("starting_after", starting_after), ("ending_before", ending_before)):
        if cursor is not None and get_item(scope, cursor) is None:
            raise not_found(f"No such object: '{wire.clip(cursor)}'", param)
    return store.page(
        settings().main_table, scope_pk(scope), PREFIX, limit, starting_after, ending_before, keep=keep
    )


def settle(scope: str, event_id: str, endpoint_id: str) -> bool:
    """One delivery is over (acknowledged or abandoned): decrement `pending_webhooks` once.
    False when it was already settled (a redelivered message) or the event has expired."""
    try:
        aws.dynamodb().update_item(
            TableName=settings().main_table,
            Key=store.to_item({"pk": scope_pk(scope), "sk": event_sk(event_id)}),
            UpdateExpression="SET pw = pw - :one DELETE whp :endpoint",
            ConditionExpression="contains(whp, :id)",
            ExpressionAttributeValues=store.values(
                {":one": 1, ":endpoint": {endpoint_id}, ":id": endpoint_id}
            ),
        )
    except ClientError as exc:
        if store.error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def is_pending(item: dict, endpoint_id: str) -> bool:
    return endpoint_id in (item.get("whp") or set())
