"""Rollup storage: per-contribution ledger and per-window buckets (table ROLLUPS_TABLE).

- ledger `L#<scope>#<meter>#<customer>#<day start>` / `<ts>#<seq>#<identifier>`: one item
  per event that ever counted, `st` = "c" (counts) or "x" (stopped counting: cancelled
  or replaced). An event's life is absent -> c -> x and never goes back, so every
  change is a conditional put from the state it was read in: a redelivered or
  reordered stream record finds the ledger already past it and changes nothing.
- bucket `B#<scope>#<meter>#<customer>` / `<M|H|D>#<window start>`: sum, count and the
  latest (timestamp, sequence, value) of the counted events in one minute, hour or UTC
  day, with a version `ver` for optimistic concurrency. A bucket changes only in the
  same transaction as the ledger items behind the change.
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

    @classmethod
    def from_item(cls, item: dict | None) -> "Bucket":
        if not item:
            return cls()
        last = None
        if item.get("lts") is not None:
            last = (int(item["lts"]), item["lseq"], Decimal(item["lv"]))
        return cls(Decimal(item["sum"]), int(item["cnt"]), last, int(item["ver"]), True)

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
        return item

    def merge(self, other: "Bucket") -> None:
        """Fold another window into this one (for summaries)."""
        with exact():
            self.total += other.total
        self.count += other.count
        if other.last is not None and (self.last is None or other.last[:2] > self.last[:2]):
            self.last = other.last
