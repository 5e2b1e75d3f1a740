"""Meter events in DynamoDB, written with conditional writes only.

Items (table EVENTS_TABLE, every key starts with the scope: account and mode):
- event  `A#<scope>#ID#<identifier>` / `EV`: one per accepted identifier. The put is
  conditional on the key not existing, which is the identifier dedup (an identifier is
  refused for as long as its event is kept: RETENTION_SECONDS, well over Stripe's 24 h).
  For raw meters this single item is the event that counts.
- slot   `A#<scope>#SLOT#<meter>#<customer>#<window start>` / `SLOT`: pre-aggregated
  meters. It holds the most recently received event of its (meter, customer, UTC
  window); a put replaces it only when its receipt sequence is newer (conditional), so
  concurrent writers leave the newest one. The event item of a pre-aggregated event
  records the identifier; the slot is what counts.

The aggregate function reads this table's stream; nothing here touches rollups.
"""

import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

from metering import aws, clock, store
from metering.config import settings
from metering.errors import idempotency_mismatch
from metering.ids import monotonic_ns
from metering.keys import key, part
from metering.meter_events import Accepted, Rejected, reject
from metering.wire import format_decimal

RETENTION_SECONDS = 45 * 24 * 3600
WINDOW_SECONDS = {"hour": 3600, "day": 86400}
NEW = "attribute_not_exists(pk)"


@dataclass(frozen=True)
class Stored:
    event: Accepted
    received: int
    counted: bool  # False when a newer event already holds its pre-aggregation slot
    replayed: bool = False  # found already stored from the same source (a retry)


def event_key(scope: str, identifier: str) -> dict:
    return {"pk": key("A", scope, "ID", part(identifier)), "sk": "EV"}


def slot_key(scope: str, meter_id: str, customer: str, window_start: int) -> dict:
    return {"pk": key("A", scope, "SLOT", meter_id, part(customer), str(window_start)), "sk": "SLOT"}


def window_start(timestamp: int, window: str) -> int:
    size = WINDOW_SECONDS[window]
    return timestamp - timestamp % size


def duplicate(identifier: str) -> Rejected:
    return reject(
        "duplicate_identifier", f"An event already exists with identifier {identifier}.", "identifier"
    )


def _attributes(
    event: Accepted, seq: str, received: int, source: str | None, fingerprint: str | None
) -> dict:
    return {
        "src": source,
        "fp": fingerprint,
        "scope": event.scope,
        "mid": event.meter["id"],
        "en": event.event_name,
        "f": event.formula,
        "cust": event.customer,
        "ts": event.timestamp,
        "v": format_decimal(event.value) if event.value is not None else None,
        "ident": event.identifier,
        "seq": seq,
        "rcv": received,
        "payload": event.payload,
        "live": event.livemode,
        "st": "ok",
        "expires_at": received + RETENTION_SECONDS,
        "al": event.meter.get("alerts") or None,  # the meter has billing alerts (alert_counters)
    }


def record(event: Accepted, source: str | None = None, fingerprint: str | None = None) -> Stored:
    """Store one accepted event; raises Rejected(duplicate_identifier) for a seen identifier.

    `source` tags where the event came from (a bulk file's row): storing the same event
    again from the same source is not a duplicate but the earlier write, so a bulk file
    resumed after a crash never reports its own rows as duplicates.
    """
    received = int(clock.now())
    seq = f"{monotonic_ns():020d}"
    attrs = _attributes(event, seq, received, source, fingerprint)
    table = settings().events_table
    window = event.meter.get("event_time_window")
    try:
        if not window:
            aws.dynamodb().put_item(
                TableName=table,
                Item=store.to_item({**event_key(event.scope, event.identifier), **attrs, "t": "raw"}),
                ConditionExpression=NEW,
            )
            return Stored(event, received, True)
        return _record_pre_aggregated(event, attrs, window, table)
    except ClientError as exc:
        if store.error_code(exc) != "ConditionalCheckFailedException":
            store.raise_retryable(exc)
            raise
        return _earlier_write(event, source, fingerprint, exc)
    except Rejected as exc:
        if exc.code != "duplicate_identifier":
            raise
        return _earlier_write(event, source, fingerprint, exc)


def stored_from(event: Accepted, source: str, fingerprint: str | None = None) -> Stored | None:
    """The event as stored from `source` (a retry, or a write whose answer was lost), or None.

    A request with the same source but another fingerprint (an Idempotency-Key reused with
    other parameters) is an idempotency error."""
    key_ = event_key(event.scope, event.identifier)
    existing = store.get(settings().events_table, key_["pk"], key_["sk"], consistent=True)
    if not existing or existing.get("src") != source:
        return None
    if existing.get("fp") != fingerprint:
        raise idempotency_mismatch(source.partition("#")[2])
    stored = replace(event, timestamp=int(existing["ts"]))  # as first stored (a default timestamp)
    return Stored(stored, int(existing["rcv"]), existing.get("st") != "superseded", replayed=True)


def _earlier_write(event: Accepted, source: str | None, fingerprint: str | None, exc: Exception) -> Stored:
    """The same event already stored from the same source, or a duplicate error."""
    earlier = stored_from(event, source, fingerprint) if source is not None else None
    if earlier is None:
        raise duplicate(event.identifier) from exc
    return earlier


def _record_pre_aggregated(event: Accepted, attrs: dict, window: str, table: str) -> Stored:
    start = window_start(event.timestamp, window)
    slot = slot_key(event.scope, event.meter["id"], event.customer, start)
    ident = {
        **event_key(event.scope, event.identifier),
        **attrs,
        "t": "pre",
        "slot": slot["pk"],
        "ws": start,
    }
    for attempt in range(5):
        try:
            aws.dynamodb().transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": store.to_item(ident), "ConditionExpression": NEW}},
                    {
                        "Put": {
                            "TableName": table,
                            "Item": store.to_item({**slot, **attrs, "t": "slot", "ws": start}),
                            "ConditionExpression": "attribute_not_exists(pk) OR seq < :seq",
                            "ExpressionAttributeValues": store.values({":seq": attrs["seq"]}),
                        }
                    },
                ]
            )
            return Stored(event, attrs["rcv"], True)
        except ClientError as exc:
            if store.error_code(exc) != "TransactionCanceledException":
                raise
            codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise duplicate(event.identifier) from exc
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                # A newer event already holds the window: this one is kept for dedup only.
                aws.dynamodb().put_item(
                    TableName=table,
                    Item=store.to_item({**ident, "st": "superseded"}),
                    ConditionExpression=NEW,
                )
                return Stored(event, attrs["rcv"], False)
            time.sleep(0.01 * (attempt + 1))  # transaction conflict with a concurrent writer: retry
    raise ClientError(
        {"Error": {"Code": "TransactionConflictException", "Message": "retries exhausted"}}, "Put"
    )


def record_many(
    events: list[Accepted], workers: int = 16, sources: list[str] | None = None
) -> list[Stored | Exception]:
    """Store many events concurrently; each result is Stored or the exception it raised
    (Rejected for a duplicate, anything else for a fault whose outcome is unknown).

    `sources`, when given, tags each event (see `record`)."""
    tags = sources if sources is not None else [None] * len(events)

    def one(pair: tuple[Accepted, str | None]) -> Stored | Exception:
        try:
            return record(*pair)
        except Exception as exc:  # Rejected, or a fault: the caller decides
            return exc

    pairs = list(zip(events, tags, strict=True))
    if len(pairs) <= 1:
        return [one(p) for p in pairs]
    return list(_pool(workers).map(one, pairs))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Writer threads kept for the life of the (warm) Lambda instead of started per request."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="event-writer")
