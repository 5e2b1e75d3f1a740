"""The partial first minute of long periods, kept before the ledger forgets it.

`metering.usage` reads the partial minutes at both ends of [start, end) from the rollup
ledger, whose items live 75 days. That covers periods up to a month plus the grace
period, but a longer period (quarterly, yearly) would lose the events of its first
partial minute before its invoice is finalized. So for a period of 40 days or more that
does not start on a whole minute, an `EDGE#<subscription>#<start>` item is written with
the period (same transaction) and is due 37 days after the start: by then no event with
a timestamp in that minute can arrive (timestamps are accepted up to 35 days back) or be
cancelled (cancels within 24 hours of receipt), nor be replaced in a pre-aggregation
window (an hour or a day). It then stores, per subscription item, that minute's sum,
count and latest event; invoice lines read [next minute, end) from metering and add it.
"""

from decimal import Decimal

from billing import storage
from metering import usage
from metering.accounts import Principal
from metering.rollups import Bucket
from metering.wire import format_decimal

PREFIX = "EDGE#"
SNAPSHOT_AFTER = 37 * 86400
LONG_PERIOD = 40 * 86400
MINUTE = 60


def needed(start: int, end: int) -> bool:
    return start % MINUTE != 0 and end - start >= LONG_PERIOD


def minute_end(start: int) -> int:
    return start - start % MINUTE + MINUTE


def sk(subscription_id: str, start: int) -> str:
    return f"{PREFIX}{subscription_id}#{int(start):010d}"


def new_entry(who: Principal, subscription: dict, start: int) -> dict:
    """The edge item of a period starting at `start`, due SNAPSHOT_AFTER later."""
    at = int(start) + SNAPSHOT_AFTER
    partition = (
        storage.clock_partition(who.scope, subscription["test_clock"])
        if subscription.get("test_clock")
        else storage.shard_of(subscription["id"])
    )
    return {
        "pk": storage.scope_pk(who.scope),
        "sk": sk(subscription["id"], start),
        "id": f"{subscription['id']}#{int(start):010d}",
        "account_id": who.account_id,
        "livemode": who.livemode,
        "subscription": subscription["id"],
        "start": int(start),
        "due_at": at,
        "dpk": partition,
        "dsk": storage.due_sort(at, storage.EDGE, subscription["id"]),
    }


def steps_for_period(who: Principal, subscription: dict, start: int, end: int) -> list[dict]:
    """The transaction step creating the edge item of a new period, when it needs one."""
    return [storage.put_new(new_entry(who, subscription, start))] if needed(start, end) else []


def take(who: Principal, entry: dict, subscription: dict) -> None:
    """Store the first minute's aggregates of every item (once: conditional on not taken)."""
    from billing import prices

    start = int(entry["start"])
    price_items = prices.load_many(who, [i["price"] for i in subscription["items"]])
    kept = {}
    for item in subscription["items"]:
        meter_id = price_items[item["price"]]["recurring"]["meter"]
        bucket = usage.totals(who.scope, meter_id, subscription["customer"], start, minute_end(start))
        kept[item["id"]] = {
            "sum": format_decimal(bucket.total),
            "cnt": bucket.count,
            "last": [bucket.last[0], bucket.last[1], format_decimal(bucket.last[2])] if bucket.last else None,
        }
    done = {k: v for k, v in entry.items() if k not in ("dpk", "dsk")}
    done["taken"] = kept
    try:
        storage.transact([storage.put(done, "attribute_not_exists(taken)")])
    except storage.Conflict:
        pass  # another run took it: the same values


def load(who: Principal, subscription: dict, start: int, end: int) -> dict | None:
    """The taken edge of the period starting at `start`, if it has one (`end` is where the
    usage read stops; the period's own end decides whether it can have an edge)."""
    current = int(subscription["period_start"]) == int(start)
    period_end = int(subscription["period_end"]) if current else int(end)
    if not needed(start, period_end):
        return None
    entry = storage.get(who.scope, sk(subscription["id"], start))
    return entry if entry and entry.get("taken") is not None else None


def aggregate(who: Principal, meter: dict, customer: str, start: int, end: int, kept: dict | None):
    """usage.aggregate over [start, end), the first partial minute taken from `kept`."""
    if kept is None or end <= minute_end(start):
        return usage.aggregate(who.scope, meter, customer, start, end)
    last = kept.get("last")
    merged = Bucket(
        Decimal(kept["sum"]), int(kept["cnt"]), (int(last[0]), last[1], Decimal(last[2])) if last else None
    )
    merged.merge(usage.totals(who.scope, meter["id"], customer, minute_end(start), end))
    return usage.value_of(meter["formula"], merged)
