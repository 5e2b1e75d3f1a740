"""Billing storage (table BILLING_TABLE): keys, conditional writes, transactions, index pages.

Every object of one account and mode lives in the partition `ACCT#<scope>` (scope =
account id + mode), under a sort key naming its kind and id (`CUS#cus_...`,
`SUB#sub_...`, `IN#in_...`). Two sparse global secondary indexes, both KEYS_ONLY:

- `parent` (`ppk`, `psk`): children by parent, e.g. a customer's subscriptions and
  invoices (`ppk = ACCT#<scope>#CUS#<customer>`), a test clock's customers.
- `due` (`dpk`, `dsk`): what has a boundary to run and when. `dpk` is one of
  SHARDS real-time shards (`DUE#<n>`), or a test clock's own partition; `dsk` is
  `<10-digit unix time>#<kind>#...`, so a query up to a time returns due work in time
  order, period ends (`a`) before finalizations (`b`) at the same second (then clock
  advances `c` and first-minute snapshots `d`, see `edges`).

Index reads are eventually consistent, so whatever they return is re-read from the
table (consistent) before it is acted on.
"""

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from billing.config import billing_settings
from metering import aws, store
from metering.errors import StripeError, not_found
from metering.keys import key, part

SHARDS = 16
PARENT_INDEX = "parent"
DUE_INDEX = "due"
CLOSE, FINALIZE, ADVANCE, EDGE = "a", "b", "c", "d"


def table() -> str:
    return billing_settings().billing_table


MAX_ID = 200  # ids in paths and cursors: longer ones name nothing (and would not fit a key)


def scope_pk(scope: str) -> str:
    return key("ACCT", scope)


def parent_key(scope: str, kind: str, object_id: str) -> str:
    """The `ppk` of the children of one object (a customer, a test clock)."""
    return key("ACCT", scope, kind, part(object_id))


def shards() -> list[str]:
    return [key("DUE", str(n)) for n in range(SHARDS)]


def shard_of(object_id: str) -> str:
    digest = hashlib.sha256(object_id.encode()).digest()
    return key("DUE", str(digest[0] % SHARDS))


def clock_partition(scope: str, clock_id: str) -> str:
    """The due partition of a test clock: its boundaries run only when it is advanced."""
    return key("CLOCKDUE", scope, part(clock_id))


def due_sort(at: int, kind: str, object_id: str) -> str:
    return f"{int(at):010d}#{kind}#{object_id}"


def get(scope: str, sk: str, consistent: bool = True) -> dict | None:
    return store.get(table(), scope_pk(scope), sk, consistent)


def find(scope: str, make_sk, object_id: str, consistent: bool = True) -> dict | None:
    """The object an id names, or None; ids over MAX_ID characters name nothing (and would
    not fit a key), so they are never looked up."""
    return get(scope, make_sk(object_id), consistent) if len(object_id) <= MAX_ID else None


def get_key(pk: str, sk: str) -> dict | None:
    return store.get(table(), pk, sk, consistent=True)


def get_many(keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    return store.batch_get(table(), keys, consistent=True)


def put(
    item: dict, condition: str | None = None, values: dict | None = None, names: dict | None = None
) -> dict:
    """A transaction Put."""
    op: dict[str, Any] = {"TableName": table(), "Item": store.to_item(item)}
    if condition:
        op["ConditionExpression"] = condition
    if values:
        op["ExpressionAttributeValues"] = store.values(values)
    if names:
        op["ExpressionAttributeNames"] = names
    return {"Put": op}


def put_new(item: dict) -> dict:
    return put(item, "attribute_not_exists(pk)")


def put_versioned(item: dict, version: int) -> dict:
    """Replace an item only if it is still at `version` (optimistic concurrency)."""
    return put({**item, "ver": version + 1}, "ver = :ver", {":ver": version})


class Conflict(Exception):
    """A transaction's condition did not hold: someone else changed the state first."""

    def __init__(self, reasons: list[str]):
        super().__init__(", ".join(reasons))
        self.reasons = reasons


def busy(what: str) -> StripeError:
    """Still conflicting after the retries: Stripe's lock_timeout, to be retried by the caller."""
    return StripeError(
        f"This {what} is being changed by another request right now; retry.",
        429,
        "invalid_request_error",
        "lock_timeout",
        should_retry=True,
    )


def transact(operations: list[dict]) -> None:
    """All or nothing. Raises Conflict when a condition failed or a concurrent transaction
    touched the same items (the caller re-reads and tries again), 429 on throttling."""
    try:
        aws.dynamodb().transact_write_items(TransactItems=operations)
    except ClientError as exc:
        code = store.error_code(exc)
        if code == "TransactionCanceledException":
            reasons = [r.get("Code") or "None" for r in exc.response.get("CancellationReasons") or []]
            if {"ConditionalCheckFailed", "TransactionConflict"} & set(reasons):
                raise Conflict(reasons) from exc
        if code == "ConditionalCheckFailedException":
            raise Conflict(["ConditionalCheckFailed"]) from exc
        store.raise_retryable(exc)
        raise


def _index_keys(index: str, pk_name: str, sk_name: str, pk: str, low: str, high: str, forward: bool):
    kwargs: dict[str, Any] = dict(
        TableName=table(),
        IndexName=index,
        KeyConditionExpression="#p = :pk AND #s BETWEEN :lo AND :hi",
        ExpressionAttributeNames={"#p": pk_name, "#s": sk_name},
        ExpressionAttributeValues=store.values({":pk": pk, ":lo": low, ":hi": high}),
        ScanIndexForward=forward,
    )
    while True:
        try:
            out = aws.dynamodb().query(**kwargs)
        except ClientError as exc:
            store.raise_retryable(exc)
            raise
        for item in out.get("Items", []):
            yield store.from_item(item)
        if "LastEvaluatedKey" not in out:
            return
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def due_keys(partition: str, until: int, limit: int | None = None) -> Iterator[dict]:
    """Keys of the items due at or before `until` in a due partition, earliest first."""
    found = _index_keys(DUE_INDEX, "dpk", "dsk", partition, "0", f"{int(until):010d}#~", forward=True)
    for n, item in enumerate(found):
        if limit is not None and n >= limit:
            return
        yield item


def child_page(
    ppk: str,
    prefix: str,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
    keep: Callable[[dict], bool] = lambda item: True,
) -> tuple[list[dict], bool]:
    """Newest-first page of a parent's children whose `psk` is prefix + time-ordered id.

    Like `metering.store.page` (Stripe cursors), over the `parent` index; the children are
    read back from the table so `keep` sees current documents."""
    if ending_before is not None:
        keys = _index_keys(
            PARENT_INDEX, "ppk", "psk", ppk, prefix + ending_before + "\x00", prefix + store.HIGH, True
        )
    else:
        high = prefix + starting_after if starting_after is not None else prefix + store.HIGH
        keys = _index_keys(PARENT_INDEX, "ppk", "psk", ppk, prefix, high, False)
    picked: list[dict] = []
    has_more = False
    batch: list[dict] = []

    def flush() -> bool:
        nonlocal has_more
        docs = get_many([(k["pk"], k["sk"]) for k in batch])
        for k in batch:
            doc = docs.get((k["pk"], k["sk"]))
            if doc is None or not keep(doc):
                continue
            if len(picked) == limit:
                has_more = True
                return True
            picked.append(doc)
        batch.clear()
        return False

    for k in keys:
        if starting_after is not None and k["psk"] == prefix + starting_after:
            continue
        batch.append(k)
        if len(batch) > limit and flush():
            break
    else:
        flush()
    if ending_before is not None:
        picked.reverse()
    return picked, has_more


def children(ppk: str, prefix: str) -> Iterator[dict]:
    """Every child (current document) of a parent, oldest first."""
    batch: list[dict] = []
    for k in _index_keys(PARENT_INDEX, "ppk", "psk", ppk, prefix, prefix + store.HIGH, True):
        batch.append(k)
        if len(batch) == 100:
            docs = get_many([(b["pk"], b["sk"]) for b in batch])
            yield from (docs[(b["pk"], b["sk"])] for b in batch if (b["pk"], b["sk"]) in docs)
            batch = []
    if batch:
        docs = get_many([(b["pk"], b["sk"]) for b in batch])
        yield from (docs[(b["pk"], b["sk"])] for b in batch if (b["pk"], b["sk"]) in docs)


def page_of(scope: str, prefix: str, spec: Any, keep: Callable[[dict], bool], parent: str | None = None):
    """A newest-first page (`spec`: limit and cursors) of one kind of object of a scope, read
    through a parent's index (a customer's or a clock's objects) when `parent` is given.

    A cursor must name one of the caller's objects of that kind: anything else (unknown,
    another account's or mode's) is Stripe's 404 `resource_missing` naming the cursor."""
    for param in ("starting_after", "ending_before"):
        cursor = getattr(spec, param)
        if cursor is not None and (
            len(cursor) > MAX_ID or get(scope, prefix + cursor, consistent=False) is None
        ):
            raise not_found(f"No such object: '{cursor[:MAX_ID]}'", param)
    cursors = (spec.limit, spec.starting_after, spec.ending_before, keep)
    if parent is not None:
        return child_page(parent, prefix, *cursors)
    return store.page(table(), scope_pk(scope), prefix, *cursors)
