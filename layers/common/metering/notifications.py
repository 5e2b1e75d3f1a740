"""Stripe v2 thin events: stored for `GET /v2/core/events` and published on EventBridge.

The copy read through the API is written first and is authoritative; the bus gets the
event afterwards, retried a few times (a refused entry or a failed call), and a bus
failure is logged, never raised. `publish_once` stores events together with a marker item
in one transaction, so work that may run again (a resumed bulk segment) publishes its
events exactly once.
"""

import json
import re
import time
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from metering import aws, store, wire
from metering.accounts import scope_of
from metering.config import settings
from metering.errors import not_found
from metering.ids import new_id
from metering.keys import key
from metering.observability import logger

if TYPE_CHECKING:
    from pydantic import BaseModel

RETENTION_SECONDS = 30 * 24 * 3600
SOURCE = "metering"
BUS_ATTEMPTS = 3
BUS_BATCH = 10  # PutEvents takes at most 10 entries
TRANSACTION_ITEMS = 100
EVENT_ID = re.compile(r"evt_[0-9a-f]{24}")


def rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meter_ref(meter_id: str) -> dict:
    return {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}


def _event(type_: str, livemode: bool, related: dict | None, data: dict | None) -> dict:
    return {
        "id": new_id("evt"),
        "object": "v2.core.event",
        "type": type_,
        "created": rfc3339(time.time()),
        "livemode": livemode,
        "context": None,
        "reason": None,
        "related_object": related,
        "data": data,
    }


def _item(account_id: str, event: dict) -> dict:
    return {
        "pk": key("ACCT", scope_of(account_id, event["livemode"])),
        "sk": key("EVT", event["id"]),
        "doc": wire.dumps(event),
        "expires_at": int(time.time()) + RETENTION_SECONDS,
    }


def publish(account_id: str, livemode: bool, type_: str, related: dict | None, data: dict | None) -> dict:
    """Record an event for the account, then put it on the bus. Returns the event."""
    event = _event(type_, livemode, related, data)
    store.put_new(settings().main_table, _item(account_id, event))
    put_on_bus(account_id, [event])
    return event


def publish_once(account_id: str, livemode: bool, events: list[tuple], marker: dict) -> list[dict]:
    """Record events (type, related, data) unless `marker` (a main table key) exists, in one
    transaction with the marker; then put them on the bus. Returns the events written now:
    none when an earlier run already published them."""
    built = [_event(type_, livemode, related, data) for type_, related, data in events]
    table, written = settings().main_table, []
    size = TRANSACTION_ITEMS - 1
    for n, start in enumerate(range(0, len(built), size)):
        chunk = built[start : start + size]
        mark = {
            **marker,
            "sk": marker["sk"] + (f"#{n}" if n else ""),
            "expires_at": int(time.time()) + RETENTION_SECONDS,
        }
        new = "attribute_not_exists(pk)"
        puts = [{"Put": {"TableName": table, "Item": store.to_item(mark), "ConditionExpression": new}}]
        puts += [
            {
                "Put": {
                    "TableName": table,
                    "Item": store.to_item(_item(account_id, e)),
                    "ConditionExpression": new,
                }
            }
            for e in chunk
        ]
        try:
            aws.dynamodb().transact_write_items(TransactItems=puts)
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                continue  # published by an earlier run
            store.raise_retryable(exc)
            raise
        written.extend(chunk)
    put_on_bus(account_id, written)
    return written


def put_on_bus(account_id: str, events: list[dict]) -> bool:
    """Put events on the bus, retrying refused entries and failed calls; False (logged) when
    some could not be put. The events stay readable through /v2/core/events either way."""
    pending = [
        {
            "Source": SOURCE,
            "DetailType": event["type"],
            "Detail": json.dumps({"account": account_id, "event": json.loads(wire.dumps(event))}),
            "EventBusName": settings().event_bus,
        }
        for event in events
    ]
    for attempt in range(BUS_ATTEMPTS):
        if not pending:
            return True
        if attempt:
            time.sleep(0.05 * 2**attempt)
        retry = []
        for start in range(0, len(pending), BUS_BATCH):
            batch = pending[start : start + BUS_BATCH]
            try:
                out = aws.events().put_events(Entries=batch)
            except ClientError:
                logger.warning("EventBridge put_events failed", exc_info=True)
                retry.extend(batch)
                continue
            results = out.get("Entries") or []
            retry.extend(
                entry
                for i, entry in enumerate(batch)
                if i >= len(results) or results[i].get("ErrorCode") or not results[i].get("EventId")
            )
        pending = retry
    if pending:
        logger.error(
            "events could not be put on the EventBridge bus (they stay in /v2/core/events)",
            extra={"count": len(pending), "types": sorted({e["DetailType"] for e in pending})},
        )
        return False
    return True


def get_event(scope: str, event_id: str) -> dict | None:
    if not EVENT_ID.fullmatch(event_id):
        return None
    item = store.get(settings().main_table, key("ACCT", scope), key("EVT", event_id))
    return json.loads(item["doc"]) if item else None


def list_events(
    scope: str,
    limit: int,
    page_after: str | None,
    object_id: str | None = None,
    types: list[str] | None = None,
    created: tuple[int | None, int | None] = (None, None),
) -> tuple[list[dict], bool]:
    """Newest first; `object_id` keeps events whose related object is that object, `types`
    events of those types, `created` (low, high) in unix milliseconds, both inclusive, events
    created in that range (read as a key range: ids start with their time)."""
    prefix = key("EVT", "")
    low, high = prefix, prefix + store.HIGH
    if created[0] is not None:  # ids carry nanoseconds a little after `created`: a second of slack
        low = prefix + f"evt_{max(0, created[0] - 1000) * 1_000_000:016x}"
    if created[1] is not None:
        high = prefix + f"evt_{max(0, created[1] + 1000) * 1_000_000:016x}"
    if page_after is not None:
        high = min(high, prefix + page_after)
    wanted = set(types) if types else None
    picked: list[dict] = []
    for item in store.query(settings().main_table, key("ACCT", scope), low, high, forward=False):
        if page_after is not None and item["sk"] == prefix + page_after:
            continue
        event = json.loads(item["doc"])
        if object_id is not None and (event.get("related_object") or {}).get("id") != object_id:
            continue
        if wanted is not None and event.get("type") not in wanted:
            continue
        if created != (None, None):
            at = _created_ms(event)
            if (created[0] is not None and at < created[0]) or (created[1] is not None and at > created[1]):
                continue
        if len(picked) == limit:
            return picked, True
        picked.append(event)
    return picked, False


def _created_ms(event: dict) -> int:
    from metering.meter_events import parse_rfc3339_ms

    return parse_rfc3339_ms(event["created"], "created")


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request."""
    from pydantic import BaseModel, ConfigDict, Field

    class _Created(BaseModel):
        model_config = ConfigDict(extra="forbid")

        gt: str | None = None
        gte: str | None = None
        lt: str | None = None
        lte: str | None = None

    class EventList(BaseModel):
        model_config = ConfigDict(extra="forbid")

        limit: wire.WireInt = Field(default=20, ge=1, le=100)
        page: Annotated[str, Field(max_length=5000)] | None = None
        object_id: Annotated[str, Field(max_length=5000)] | None = None
        created: _Created | None = None
        types: Annotated[list[Annotated[str, Field(max_length=5000)]], Field(max_length=20)] | None = None

    return {"_Created": _Created, "EventList": EventList}


_MODEL_NAMES = (
    "_Created",
    "EventList",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def _bounds(created: "BaseModel | None") -> tuple[int | None, int | None]:
    """(low, high) in unix milliseconds, inclusive, from created[gt|gte|lt|lte]."""
    from metering.meter_events import parse_rfc3339_ms

    if created is None:
        return None, None
    low = high = None
    for name in ("gt", "gte", "lt", "lte"):
        value = getattr(created, name)
        if value is None:
            continue
        ms = parse_rfc3339_ms(value, f"created[{name}]")
        if name == "gt":
            low = max(low if low is not None else ms + 1, ms + 1)
        elif name == "gte":
            low = max(low if low is not None else ms, ms)
        elif name == "lt":
            high = min(high if high is not None else ms - 1, ms - 1)
        else:
            high = min(high if high is not None else ms, ms)
    return low, high


def list_page(scope: str, params: dict) -> dict:
    """`GET /v2/core/events`: Stripe v2 list with `page` tokens and `created`/`types` filters."""
    spec = wire.validate(_models()["EventList"], params)
    low, high = _bounds(spec.created)
    page = spec.page or None
    if page is not None and (
        not EVENT_ID.fullmatch(page)
        or store.get(settings().main_table, key("ACCT", scope), key("EVT", page)) is None
    ):
        raise not_found(f"No such page: '{wire.clip(page)}'", "page")
    if low is not None and high is not None and low > high:
        events, has_more = [], False
    else:
        events, has_more = list_events(
            scope, spec.limit, page, spec.object_id or None, spec.types, (low, high)
        )
    next_url = None
    if has_more:
        query: list[tuple[str, str]] = [("limit", str(spec.limit)), ("page", events[-1]["id"])]
        if spec.object_id:
            query.append(("object_id", spec.object_id))
        for name in ("gt", "gte", "lt", "lte"):
            value = getattr(spec.created, name) if spec.created else None
            if value is not None:
                query.append((f"created[{name}]", value))
        query += [(f"types[{i}]", t) for i, t in enumerate(spec.types or [])]
        next_url = "/v2/core/events?" + urlencode(query)
    return {"data": events, "next_page_url": next_url, "previous_page_url": None}
