"""A meter's usage for one customer over [start, end), exact to the second.

The public read billing uses (invoice lines, previews). Whole minutes come from the
rollup buckets (the fewest day, hour and minute buckets that tile them, as summaries
read them); the partial minutes at the two edges come from their minute buckets'
per-second sums (sum and count meters), or from the ledger (`last` meters, and minutes
aggregated before seconds were kept), so the cost is O(buckets), plus for `last` meters
the events inside those two edge minutes, whatever the number of events in the period.
Reads are strongly consistent: what the aggregate function
has committed is what counts.

An event whose timestamp is `end - 1` counts, one at `end` does not, for every
formula; for `last`, the latest (timestamp, receipt sequence) among everything
included wins, as in the rollups.
"""

from decimal import Decimal

from metering import store, summaries
from metering.config import settings
from metering.rollups import COUNTED, GRANULARITY, Bucket, bucket_pk, bucket_sk, floor, ledger_pk

MINUTE = GRANULARITY["M"]
DAY = GRANULARITY["D"]


def _ledger(scope: str, meter_id: str, customer: str, start: int, end: int) -> Bucket:
    """Counted ledger items with start <= ts < end; [start, end) lies inside one minute."""
    merged = Bucket()
    if start >= end:
        return merged
    pk = ledger_pk(scope, meter_id, customer, floor(start, DAY))
    items = store.query(
        settings().rollups_table, pk, f"{start:010d}", f"{end - 1:010d}~", forward=True, consistent=True
    )
    for item in items:
        if item.get("st") != COUNTED:
            continue
        ts_text, seq, _ = item["sk"].split("#", 2)
        value = Decimal(item["v"])
        merged.merge(Bucket(value, 1, (int(ts_text), seq, value)))
    return merged


def _partial(scope: str, meter_id: str, customer: str, start: int, end: int) -> Bucket:
    """[start, end) inside one minute: the minute bucket's seconds, else the ledger."""
    if start >= end:
        return Bucket()
    minute = floor(start, MINUTE)
    item = store.get(
        settings().rollups_table,
        bucket_pk(scope, meter_id, customer),
        bucket_sk("M", minute),
        consistent=True,
    )
    if item is None:
        return Bucket()  # nothing counted in that minute
    bucket = Bucket.from_item(item)
    if bucket.seconds is not None:
        return bucket.between(minute, start, end)
    return _ledger(scope, meter_id, customer, start, end)


def _buckets(scope: str, meter_id: str, customer: str, start: int, end: int) -> Bucket:
    """Whole minutes [start, end) from the covering rollup buckets (strongly consistent)."""
    if start >= end:
        return Bucket()
    return summaries.total(scope, meter_id, customer, start, end, consistent=True)


def totals(scope: str, meter_id: str, customer: str, start: int, end: int) -> Bucket:
    """Sum, count and latest event of [start, end) (any seconds)."""
    if end <= start:
        return Bucket()
    inner_start = -(-start // MINUTE) * MINUTE  # first whole minute at or after start
    inner_end = floor(end, MINUTE)
    if inner_start >= inner_end:
        # No whole minute inside: at most two partial minutes (one ledger day each).
        merged = Bucket()
        split = min(inner_start, end)
        merged.merge(_partial(scope, meter_id, customer, start, split))
        merged.merge(_partial(scope, meter_id, customer, split, end))
        return merged
    merged = _buckets(scope, meter_id, customer, inner_start, inner_end)
    merged.merge(_partial(scope, meter_id, customer, start, inner_start))
    merged.merge(_partial(scope, meter_id, customer, inner_end, end))
    return merged


def value_of(formula: str, bucket: Bucket) -> Decimal | int:
    if formula == "count":
        return bucket.count
    if formula == "last":
        return bucket.last[2] if bucket.last else Decimal(0)
    return bucket.total


def aggregate(scope: str, meter: dict, customer: str, start: int, end: int) -> Decimal | int:
    """The meter's aggregate (its `formula`: sum, count or last) for a customer over [start, end)."""
    return value_of(meter["formula"], totals(scope, meter["id"], customer, start, end))
