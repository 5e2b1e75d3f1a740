"""Rollup storage (table ROLLUPS_TABLE): per-window buckets, shard watermarks, and a
per-event ledger for `last` meters.

- bucket `B#<scope>#<meter>#<customer>` / `<M|H|D>#<window start>`: sum and count of the
  counted events in one minute, hour or UTC day, with a version `ver` for optimistic
  concurrency. For `last` meters also the latest (timestamp, sequence, value); for sum
  and count meters a minute bucket also holds per-second sums and counts (`sec`: second
  of the minute -> [sum, count]), which billing reads for periods that start or end
  inside a minute.
- watermark `W#<shard id>` / `W`: the last stream record of one events-table stream
  shard that the buckets hold (`seq`, zero-padded to 40 digits so it sorts as a
  number). It moves forward in the same transaction as the buckets, so a record at or
  below it was applied and a redelivery of it is skipped (metering.aggregate).
- ledger `L#<scope>#<meter>#<customer>#<day start>` / `<ts>#<seq>#<identifier>`: `last`
  meters only, one item per event that ever counted, `st` = "c" (counts) or "x" (stopped
  counting: cancelled or replaced); an event's life is absent -> c -> x. It is what a
  bucket's `last` falls back on when its latest event stops counting.
"""

from dataclasses import dataclass, field
from decimal import Decimal

from metering.keys import key, part
from metering.values import exact

GRANULARITY = {"M": 60, "H": 3600, "D": 86400}
COUNTED, REMOVED = "c", "x"


def floor(ts: int, size: int) -> int:
    return ts - ts % size


def ledger_pk(scope: str, meter_id: str, customer: str, day: int) -> str:
    return key("L", scope, meter_id, part(customer), str(day))


def ledger_sk(ts: int, seq: str, identifier: str) -> str:
    return f"{ts:010d}#{seq}#{part(identifier)}"


def watermark_key(shard: str) -> tuple[str, str]:
    return key("W", part(shard)), "W"


def bucket_pk(scope: str, meter_id: str, customer: str) -> str:
    return key("B", scope, meter_id, part(customer))


def bucket_sk(granularity: str, start: int) -> str:
    return f"{granularity}#{start:010d}"


@dataclass
class Bucket:
    """Aggregates of one window; `last` is (ts, seq, value) of the latest counted event."""

    total: Decimal = Decimal(0)
    count: int = 0
    last: tuple[int, str, Decimal] | None = None
    version: int = 0
    exists: bool = False
    dirty: bool = field(default=False, compare=False)
    # minute buckets of sum/count meters: second of the minute -> (sum, count); None: not kept
    seconds: dict[int, tuple[Decimal, int]] | None = field(default=None, compare=False)

    @classmethod
    def from_item(cls, item: dict | None) -> "Bucket":
        if not item:
            return cls()
        last = None
        if item.get("lts") is not None:
            last = (int(item["lts"]), item["lseq"], Decimal(item["lv"]))
        seconds = None
        if item.get("sec") is not None:
            seconds = {int(s): (Decimal(v[0]), int(v[1])) for s, v in item["sec"].items()}
        return cls(Decimal(item["sum"]), int(item["cnt"]), last, int(item["ver"]), True, seconds=seconds)

    def add_second(self, second: int, value: Decimal, count: int) -> None:
        """Move one second's sum and count (sum/count meters' minute buckets)."""
        if self.seconds is None:
            if self.exists and self.count:
                return  # a bucket written before seconds were kept: billing reads the ledger
            self.seconds = {}
        total, n = self.seconds.get(second, (Decimal(0), 0))
        total, n = total + value, n + count
        if n:
            self.seconds[second] = (total, n)
        else:
            self.seconds.pop(second, None)

    def between(self, minute: int, start: int, end: int) -> "Bucket":
        """The seconds of this minute bucket (starting at `minute`) with start <= ts < end."""
        out = Bucket()
        for second, (total, n) in (self.seconds or {}).items():
            if start <= minute + second < end:
                with exact():
                    out.total += total
                out.count += n
        return out

    def to_item(self, pk: str, sk: str) -> dict:
        from metering.wire import format_decimal

        item = {
            "pk": pk,
            "sk": sk,
            "sum": format_decimal(self.total),
            "cnt": self.count,
            "ver": self.version + 1,
        }
        if self.last is not None:
            item.update(lts=self.last[0], lseq=self.last[1], lv=format_decimal(self.last[2]))
        if self.seconds is not None:
            item["sec"] = {str(s): [format_decimal(t), n] for s, (t, n) in self.seconds.items()}
        return item

    def merge(self, other: "Bucket") -> None:
        """Fold another window into this one (for summaries)."""
        with exact():
            self.total += other.total
        self.count += other.count
        if other.last is not None and (self.last is None or other.last[:2] > self.last[:2]):
            self.last = other.last
