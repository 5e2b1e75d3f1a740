"""The aggregate function: events-table stream records -> exact rollups.

Each stream record is turned into ledger operations (add the event that now counts,
remove the one that stopped counting). Records are applied in chunks, each chunk one
DynamoDB transaction over its ledger items and the minute/hour/day buckets they touch,
conditioned on the exact states read (ledger state, bucket version). A redelivered
record meets a ledger already past it and adds nothing; a concurrent writer on the same
bucket makes the transaction fail and the chunk is re-read and re-applied. Buckets
whose latest event stops counting are recomputed from the ledger (strongly consistent
query), which is how a `last` meter falls back to the previous event.

Billing alerts ride on the same transactions: flagged records (meters with alerts) also
move per (alert, customer) counters with their ledger changes, and a threshold reached
is fired once (metering.alert_counters). Records of meters without alerts read nothing more.
"""

import json
import os
import random
import time
from dataclasses import dataclass, field
from decimal import Decimal

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
)
from metering.values import exact
from metering.wire import format_decimal

MAX_TRANSACTION_ITEMS = 100
MAX_ATTEMPTS = 8
# Ledger items outlive every change that can still reach them: events are at most 35 days
# old when stored and stream records live 24 hours.
LEDGER_SECONDS = 75 * 86400
_de = TypeDeserializer()


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

    @property
    def ledger_key(self) -> tuple[str, str]:
        day = floor(self.ts, GRANULARITY["D"])
        return ledger_pk(self.scope, self.meter_id, self.customer, day), ledger_sk(
            self.ts, self.seq, self.identifier
        )

    def bucket_keys(self) -> list[tuple[str, str]]:
        pk = bucket_pk(self.scope, self.meter_id, self.customer)
        return [(pk, bucket_sk(g, floor(self.ts, size))) for g, size in GRANULARITY.items()]


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
    )


def operations(record: dict) -> list[Op]:
    if record.get("eventName") == "REMOVE":
        return []  # TTL expiry of old events: their usage stays in the rollups
    seq = record["dynamodb"]["SequenceNumber"]
    old, new = contribution(_image(record, "OldImage")), contribution(_image(record, "NewImage"))
    if old == new:
        return []
    ops = []
    if old is not None and (new is None or old.ledger_key != new.ledger_key):
        ops.append(Op(seq, False, old))
    if new is not None and (old is None or old.ledger_key != new.ledger_key):
        ops.append(Op(seq, True, new))
    return ops


def _chunks(
    records: list[dict], watch: alert_counters.Watch | None = None
) -> list[tuple[list[str], list[Op]]]:
    """Group records into chunks whose transaction fits DynamoDB's item limit."""
    watch = watch or alert_counters.Watch()
    chunks: list[tuple[list[str], list[Op]]] = []
    ids: list[str] = []
    ops: list[Op] = []
    keys: set = set()
    for record in records:
        record_ops = operations(record)
        record_keys = {k for op in record_ops for k in [op.what.ledger_key, *op.what.bucket_keys()]}
        record_keys |= set(watch.counter_keys(op.what for op in record_ops))
        if ids and len(keys | record_keys) > MAX_TRANSACTION_ITEMS:
            chunks.append((ids, ops))
            ids, ops, keys = [], [], set()
        ids.append(record["dynamodb"]["SequenceNumber"])
        ops.extend(record_ops)
        keys |= record_keys
    if ids:
        chunks.append((ids, ops))
    return chunks


def handle_batch(records: list[dict]) -> dict:
    """Apply a stream batch; report the first record of a chunk that could not be applied.

    A chunk that fails for a reason other than contention or throttling is applied again
    one record at a time, so a poison record (one DynamoDB refuses whatever is retried) is
    isolated: it is reported (log, metric, the poison queue) and skipped, and the other
    records of its chunk and batch, other tenants' included, are applied as usual.
    """
    by_id = {r["dynamodb"]["SequenceNumber"]: r for r in records}
    try:
        watch = alert_counters.Watch.read(op.what for r in records for op in operations(r))
    except Exception:
        logger.exception("could not read the alerts of flagged records")
        return {"batchItemFailures": [{"itemIdentifier": next(iter(by_id))}] if by_id else []}
    for ids, ops in _chunks(records, watch):
        try:
            _apply_with_retries(ops, watch)
        except Exception as exc:
            failed = ids[0] if _transient(exc) else _one_by_one(ids, by_id, watch)
            if failed is not None:
                logger.exception("rollup chunk failed", extra={"sequence_number": failed})
                return {"batchItemFailures": [{"itemIdentifier": failed}]}
    return {"batchItemFailures": []}


def _transient(exc: Exception) -> bool:
    """Failures that a later retry of the same records can get past."""
    if isinstance(exc, ClientError):
        return store.error_code(exc) in ("TransactionCanceledException", *store.RETRYABLE) and not any(
            r.get("Code") == "ValidationError" for r in exc.response.get("CancellationReasons") or []
        )
    return isinstance(exc, OSError | TimeoutError)


def _one_by_one(ids: list[str], by_id: dict[str, dict], watch: alert_counters.Watch) -> str | None:
    """Apply records singly; returns the first one that failed transiently (None if none did)."""
    for record_id in ids:
        try:
            _apply_with_retries(operations(by_id[record_id]), watch)
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


def _apply_with_retries(ops: list[Op], watch: alert_counters.Watch | None = None) -> None:
    for attempt in range(MAX_ATTEMPTS):
        try:
            _apply(ops, watch or alert_counters.Watch())
            return
        except ClientError as exc:
            if store.error_code(exc) not in ("TransactionCanceledException", *store.RETRYABLE):
                raise
            if attempt == MAX_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.02 * 2**attempt))


def _apply(ops: list[Op], watch: alert_counters.Watch) -> None:
    if not ops:
        return
    table = settings().rollups_table
    ledger_keys = list(dict.fromkeys(op.what.ledger_key for op in ops))
    bucket_keys = list(dict.fromkeys(k for op in ops for k in op.what.bucket_keys()))
    counter_keys = list(dict.fromkeys(watch.counter_keys(op.what for op in ops)))
    current = store.batch_get(table, ledger_keys + bucket_keys + counter_keys, consistent=True)

    read_state = {k: current[k]["st"] if k in current else None for k in ledger_keys}
    state = dict(read_state)
    buckets = {k: Bucket.from_item(current.get(k)) for k in bucket_keys}
    tally = alert_counters.Tally(watch, current, [op.what for op in ops])
    stale_last: set[tuple[str, str]] = set()
    for op in ops:
        k = op.what.ledger_key
        if op.add and state[k] is None:
            state[k] = COUNTED
            _add(buckets, op.what, 1)
            tally.change(op.record_id, op.what, 1)
        elif not op.add and state[k] != REMOVED:
            was_counted = state[k] == COUNTED
            state[k] = REMOVED
            if was_counted:
                stale_last |= _add(buckets, op.what, -1)
                tally.change(op.record_id, op.what, -1)

    writes = []
    for k in ledger_keys:
        if state[k] == read_state[k]:
            continue
        item = {
            "pk": k[0],
            "sk": k[1],
            "st": state[k],
            "v": format_decimal(_value_of(ops, k)),
            "expires_at": int(k[1][:10]) + LEDGER_SECONDS,
        }
        condition, values = (
            ("attribute_not_exists(pk)", None)
            if read_state[k] is None
            else ("st = :st", {":st": read_state[k]})
        )
        writes.append(_put(table, item, condition, values))
    pending = {k: (state[k], _value_of(ops, k)) for k in ledger_keys if state[k] != read_state[k]}
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
    if writes:
        aws.dynamodb().transact_write_items(TransactItems=writes)
    tally.committed()
    for counter in tally.due():  # owed now, or by an earlier delivery that stopped before firing
        alert_counters.fire(counter)


def _put(table: str, item: dict, condition: str, values: dict | None) -> dict:
    put = {"TableName": table, "Item": store.to_item(item), "ConditionExpression": condition}
    if values:
        put["ExpressionAttributeValues"] = store.values(values)
    return {"Put": put}


def _add(buckets: dict, what: Contribution, sign: int) -> set:
    """Apply one contribution to its three buckets; returns buckets whose `last` went stale."""
    stale = set()
    for k in what.bucket_keys():
        bucket = buckets[k]
        with exact():
            bucket.total += sign * what.value
        bucket.count += sign
        bucket.dirty = True
        position = (what.ts, what.seq)
        if sign > 0 and (bucket.last is None or position > bucket.last[:2]):
            bucket.last = (what.ts, what.seq, what.value)
        elif sign < 0 and bucket.last is not None and bucket.last[:2] == position:
            stale.add(k)
    return stale


def _value_of(ops: list[Op], ledger_key: tuple[str, str]) -> Decimal:
    return next(op.what.value for op in ops if op.what.ledger_key == ledger_key)


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
