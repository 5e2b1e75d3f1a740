"""The aggregate function: events-table stream records -> exact rollups.

Each stream record is turned into operations on contributions (add the event that now
counts, remove the one that stopped counting). Records are applied in chunks, each chunk
one DynamoDB transaction over the minute/hour/day buckets it touches, conditioned on the
bucket versions read, together with the shard's watermark (`metering.rollups`).

Exactly once without an item per event: Lambda hands a shard's records to one invocation
at a time and always in order the first time; redeliveries (a retried batch, a batch
retried from a reported record, a bisected batch) repeat records already seen. So each
chunk's transaction also moves the shard's watermark, conditioned on the value read, to
its last record, and records at or below the watermark are skipped: a redelivered record
adds nothing, and a concurrent writer (another shard on the same bucket, or a timed-out
invocation still running) makes the transaction fail and the chunk is re-read. After a
chunk fails, later chunks of the batch are not applied (the batch is retried from the
failed chunk), so the watermark never passes a record that was not applied.

Meters with `last` also keep a ledger item per event (`metering.rollups`), the index a
bucket's `last` falls back on when its latest event stops counting. For sum and count
meters the minute buckets hold per-second sums instead, which is what billing needs for
periods that start or end inside a minute (`metering.usage`).

Billing alerts ride on the same transactions: flagged records (meters with alerts) also
move per (alert, customer) counters with their changes, and a threshold reached is fired
once (metering.alert_counters). Records of meters without alerts read nothing more.
"""

import json
import os
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property

from aws_lambda_powertools.metrics import MetricUnit
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from metering import alert_counters, aws, store
from metering.config import settings
from metering.keys import unpart
from metering.observability import logger, metrics
from metering.rollups import (
    COUNTED,
    GRANULARITY,
    REMOVED,
    Bucket,
    bucket_pk,
    bucket_sk,
    floor,
    ledger_pk,
    ledger_sk,
    watermark_key,
)
from metering.values import exact
from metering.wire import format_decimal

MAX_TRANSACTION_ITEMS = 100
MAX_ATTEMPTS = 8
# Ledger items outlive every change that can still reach them: events are at most 35 days
# old when stored and stream records live 24 hours.
LEDGER_SECONDS = 75 * 86400
# A watermark outlives its shard: stream records live 24 hours.
WATERMARK_SECONDS = 3 * 86400
SEQ_DIGITS = 40  # DynamoDB stream sequence numbers have 21 to 40 digits
_de = TypeDeserializer()
_SIZES = tuple(GRANULARITY.items())


@dataclass(frozen=True)
class Contribution:
    scope: str
    meter_id: str
    customer: str
    ts: int
    seq: str
    identifier: str
    value: Decimal
    flags: int = field(default=0, compare=False)  # alert flag copied at ingest (alert_counters)
    formula: str | None = field(default=None, compare=False)

    @property
    def ledgered(self) -> bool:
        """Only `last` meters keep a ledger item per event (unknown formulas too, to be safe)."""
        return self.formula not in ("sum", "count")

    @cached_property
    def ledger_key(self) -> tuple[str, str]:
        day = self.ts - self.ts % 86400
        return ledger_pk(self.scope, self.meter_id, self.customer, day), ledger_sk(
            self.ts, self.seq, self.identifier
        )

    @cached_property
    def keys(self) -> tuple[tuple[str, str], ...]:
        """The buckets it counts in (minute, hour, day), then its ledger item if it has one."""
        pk = bucket_pk(self.scope, self.meter_id, self.customer)
        out = tuple((pk, bucket_sk(g, self.ts - self.ts % size)) for g, size in _SIZES)
        return (*out, self.ledger_key) if self.ledgered else out

    def bucket_keys(self) -> tuple[tuple[str, str], ...]:
        return self.keys[:3]


@dataclass(frozen=True)
class Op:
    record_id: str  # the stream record's sequence number
    add: bool
    what: Contribution


def _image(record: dict, name: str) -> dict | None:
    raw = record.get("dynamodb", {}).get(name)
    return {k: _de.deserialize(v) for k, v in raw.items()} if raw else None


def contribution(image: dict | None) -> Contribution | None:
    """What an events-table item contributes to usage, if anything."""
    if not image or image.get("t") not in ("raw", "slot") or image.get("st") != "ok":
        return None
    value = Decimal(image["v"]) if image.get("v") is not None else Decimal(0)
    return Contribution(
        image["scope"],
        image["mid"],
        image["cust"],
        int(image["ts"]),
        image["seq"],
        image["ident"],
        value,
        int(image.get("al") or 0),
        image.get("f"),
    )


def operations(record: dict) -> list[Op]:
    if record.get("eventName") == "REMOVE":
        return []  # TTL expiry of old events: their usage stays in the rollups
    seq = record["dynamodb"]["SequenceNumber"]
    old, new = contribution(_image(record, "OldImage")), contribution(_image(record, "NewImage"))
    if old == new or (old and new and (old.ts, old.seq, old.identifier) == (new.ts, new.seq, new.identifier)):
        return []
    ops = []
    if old is not None:
        ops.append(Op(seq, False, old))
    if new is not None:
        ops.append(Op(seq, True, new))
    return ops


def position(record_id: str) -> str:
    """A sequence number in a form that sorts as the number does."""
    return record_id.zfill(SEQ_DIGITS)


Parsed = list[tuple[str, list[Op]]]


def _chunks(parsed: Parsed, watch: alert_counters.Watch) -> list[tuple[list[str], list[Op]]]:
    """Group records into chunks whose transaction (plus the watermark) fits DynamoDB's limit."""
    limit = MAX_TRANSACTION_ITEMS - 1
    chunks: list[tuple[list[str], list[Op]]] = []
    ids: list[str] = []
    ops: list[Op] = []
    keys: set = set()
    for record_id, record_ops in parsed:
        record_keys = {k for op in record_ops for k in op.what.keys}
        if watch.by_meter or watch.by_customer:
            record_keys.update(watch.counter_keys(op.what for op in record_ops))
        if ids and len(keys) + len(record_keys - keys) > limit:
            chunks.append((ids, ops))
            ids, ops, keys = [], [], set()
        ids.append(record_id)
        ops.extend(record_ops)
        keys |= record_keys
    if ids:
        chunks.append((ids, ops))
    return chunks


def handle_batch(records: list[dict], shard: str = "default") -> dict:
    """Apply a stream batch of one shard; report the first record of a chunk not applied.

    A chunk that fails for a reason other than contention or throttling is applied again
    one record at a time, so a poison record (one DynamoDB refuses whatever is retried) is
    isolated: it is reported (log, metric, the poison queue) and skipped, and the other
    records of its chunk and batch, other tenants' included, are applied as usual.
    """
    parsed: Parsed = [(r["dynamodb"]["SequenceNumber"], operations(r)) for r in records]
    by_id = {r["dynamodb"]["SequenceNumber"]: r for r in records}
    mark = Watermark(shard)
    try:
        watch = alert_counters.Watch.read(op.what for _, ops in parsed for op in ops)
    except Exception:
        logger.exception("could not read the alerts of flagged records")
        return {"batchItemFailures": [{"itemIdentifier": parsed[0][0]}] if parsed else []}
    for ids, ops in _chunks([p for p in parsed if p[1]], watch):
        try:
            _apply_with_retries(ops, watch, mark, ids[-1])
        except Exception as exc:
            failed = ids[0] if _transient(exc) else _one_by_one(ids, by_id, watch, mark)
            if failed is not None:
                logger.exception("rollup chunk failed", extra={"sequence_number": failed})
                return {"batchItemFailures": [{"itemIdentifier": failed}]}
    return {"batchItemFailures": []}


class Watermark:
    """The last stream record of a shard that the rollups hold (read with each chunk)."""

    def __init__(self, shard: str):
        self.key = watermark_key(shard)
        self.read: str | None = None  # as read with the current chunk (padded), None if none

    def applied(self, record_id: str) -> bool:
        return self.read is not None and position(record_id) <= self.read

    def put(self, table: str, last_id: str) -> dict:
        item = {
            "pk": self.key[0],
            "sk": self.key[1],
            "seq": position(last_id),
            "expires_at": int(time.time()) + WATERMARK_SECONDS,
        }
        if self.read is None:
            return _put(table, item, "attribute_not_exists(pk)", None)
        return _put(table, item, "seq = :seq", {":seq": self.read})


def _transient(exc: Exception) -> bool:
    """Failures that a later retry of the same records can get past."""
    if isinstance(exc, ClientError):
        return store.error_code(exc) in ("TransactionCanceledException", *store.RETRYABLE) and not any(
            r.get("Code") == "ValidationError" for r in exc.response.get("CancellationReasons") or []
        )
    return isinstance(exc, OSError | TimeoutError)


def _one_by_one(
    ids: list[str], by_id: dict[str, dict], watch: alert_counters.Watch, mark: Watermark
) -> str | None:
    """Apply records singly; returns the first one that failed transiently (None if none did)."""
    for record_id in ids:
        try:
            _apply_with_retries(operations(by_id[record_id]), watch, mark, record_id)
        except Exception as exc:
            if _transient(exc) or not _poison(by_id[record_id], exc):
                return record_id
    return None


def _poison(record: dict, exc: Exception) -> bool:
    """Report a record that cannot be applied; True once it is safely reported."""
    logger.error(
        "poison stream record skipped",
        extra={"sequence_number": record["dynamodb"]["SequenceNumber"], "error": repr(exc)},
    )
    metrics.add_metric(name="RollupPoisonRecords", unit=MetricUnit.Count, value=1)
    url = os.environ.get("POISON_QUEUE_URL")
    if not url:
        return True
    try:
        body = json.dumps({"error": repr(exc), "record": record}, default=str)
        aws.sqs().send_message(QueueUrl=url, MessageBody=body[:250_000])
    except Exception:
        logger.exception("could not report a poison record")
        return False  # keep it in the stream: retried, then Lambda's on-failure destination
    return True


def _apply_with_retries(ops: list[Op], watch: alert_counters.Watch, mark: Watermark, last_id: str) -> None:
    for attempt in range(MAX_ATTEMPTS):
        try:
            _apply(ops, watch, mark, last_id)
            return
        except ClientError as exc:
            if store.error_code(exc) not in ("TransactionCanceledException", *store.RETRYABLE):
                raise
            if attempt == MAX_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * 2**attempt))


def _apply(ops: list[Op], watch: alert_counters.Watch, mark: Watermark, last_id: str) -> None:
    if not ops:
        return
    table = settings().rollups_table
    keys = list(dict.fromkeys(k for op in ops for k in op.what.keys))
    counter_keys = list(dict.fromkeys(watch.counter_keys(op.what for op in ops)))
    current = store.batch_get(table, [mark.key, *keys, *counter_keys], consistent=True)
    mark.read = current[mark.key]["seq"] if mark.key in current else None
    tally = alert_counters.Tally(watch, current, [op.what for op in ops])
    ops = [op for op in ops if not mark.applied(op.record_id)]
    if not ops:  # applied by an earlier delivery, which may have stopped before firing
        for counter in tally.due():
            alert_counters.fire(counter)
        return

    ledger_keys = [k for k in keys if k[0][0] == "L"]
    read_state = {k: current[k]["st"] if k in current else None for k in ledger_keys}
    state = dict(read_state)
    values = {op.what.ledger_key: op.what.value for op in ops if op.what.ledgered}
    buckets = {k: Bucket.from_item(current.get(k)) for k in keys if k[0][0] == "B"}
    stale_last: set[tuple[str, str]] = set()
    for op in ops:
        what = op.what
        if not what.ledgered:
            _add(buckets, what, 1 if op.add else -1)
            tally.change(op.record_id, what, 1 if op.add else -1)
            continue
        k = what.ledger_key
        if op.add and state[k] is None:
            state[k] = COUNTED
            _add(buckets, what, 1)
            tally.change(op.record_id, what, 1)
        elif not op.add and state[k] != REMOVED:
            was_counted = state[k] == COUNTED
            state[k] = REMOVED
            if was_counted:
                stale_last |= _add(buckets, what, -1)
                tally.change(op.record_id, what, -1)

    writes = [mark.put(table, last_id)]
    pending = {k: (state[k], values[k]) for k in ledger_keys if state[k] != read_state[k]}
    for k, (st, value) in pending.items():
        item = {"pk": k[0], "sk": k[1], "st": st, "v": format_decimal(value)}
        item["expires_at"] = int(k[1][:10]) + LEDGER_SECONDS
        if read_state[k] is None:
            writes.append(_put(table, item, "attribute_not_exists(pk)", None))
        else:
            writes.append(_put(table, item, "st = :st", {":st": read_state[k]}))
    for k in stale_last:
        buckets[k].last = _latest_counted(table, k, pending)
    for k, bucket in buckets.items():
        if not bucket.dirty:
            continue
        if bucket.exists:
            writes.append(_put(table, bucket.to_item(*k), "ver = :ver", {":ver": bucket.version}))
        else:
            writes.append(_put(table, bucket.to_item(*k), "attribute_not_exists(pk)", None))
    writes += tally.writes()
    aws.dynamodb().transact_write_items(TransactItems=writes)
    mark.read = position(last_id)
    tally.committed()
    for counter in tally.due():  # owed now, or by an earlier delivery that stopped before firing
        alert_counters.fire(counter)


def _put(table: str, item: dict, condition: str, values: dict | None) -> dict:
    put = {"TableName": table, "Item": store.to_item(item), "ConditionExpression": condition}
    if values:
        put["ExpressionAttributeValues"] = store.values(values)
    return {"Put": put}


def _add(buckets: dict, what: Contribution, sign: int) -> set:
    """Apply one contribution to its three buckets; returns buckets whose `last` went stale.

    Buckets of sum and count meters keep no `last`; their minute buckets keep per-second
    sums and counts instead."""
    stale = set()
    keep_last = what.ledgered
    for i, k in enumerate(what.bucket_keys()):
        bucket = buckets[k]
        with exact():
            bucket.total += sign * what.value
            if i == 0 and not keep_last:
                bucket.add_second(what.ts % 60, sign * what.value, sign)
        bucket.count += sign
        bucket.dirty = True
        if not keep_last:
            continue
        spot = (what.ts, what.seq)
        if sign > 0 and (bucket.last is None or spot > bucket.last[:2]):
            bucket.last = (what.ts, what.seq, what.value)
        elif sign < 0 and bucket.last is not None and bucket.last[:2] == spot:
            stale.add(k)
    return stale


def _latest_counted(
    table: str, bucket_key: tuple[str, str], pending: dict[tuple[str, str], tuple[str, Decimal]]
) -> tuple[int, str, Decimal] | None:
    """The latest event still counting in a bucket's window: the ledger as stored, with this
    chunk's pending changes (ledger key -> (state, value)) laid over it."""
    pk, sk = bucket_key
    _, scope, meter_id, customer = pk.split("#", 3)
    granularity, start_text = sk.split("#")
    start = int(start_text)
    low, high = f"{start:010d}", f"{start + GRANULARITY[granularity] - 1:010d}~"
    lpk = ledger_pk(scope, meter_id, unpart(customer), floor(start, GRANULARITY["D"]))
    best: tuple[str, Decimal] | None = None
    for item in store.query(table, lpk, low, high, forward=False, consistent=True):
        state = pending.get((item["pk"], item["sk"]), (item["st"], None))[0]
        if state == COUNTED:
            best = item["sk"], Decimal(item["v"])
            break
    for (other_pk, other_sk), (state, value) in pending.items():
        if other_pk == lpk and state == COUNTED and low <= other_sk <= high:
            if best is None or other_sk > best[0]:
                best = other_sk, value
    if best is None:
        return None
    ts, seq, _ = best[0].split("#", 2)
    return int(ts), seq, best[1]
