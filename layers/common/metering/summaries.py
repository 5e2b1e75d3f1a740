"""`GET /v1/billing/meters/{id}/event_summaries`: usage read from the rollup buckets.

A query reads O(windows) items, never the events: without a grouping window the range is
covered by whole UTC days, whole hours at its edges and whole minutes at the outer edges;
with `hour` or `day` one bucket per window is read, newest first.
"""

import hashlib
import re
from decimal import Decimal
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal

from metering import meters, store, wire
from metering.accounts import Principal
from metering.config import settings
from metering.errors import invalid, not_found
from metering.meter_events import MAX_CUSTOMER
from metering.rollups import GRANULARITY, Bucket, bucket_pk, bucket_sk

if TYPE_CHECKING:
    from pydantic import BaseModel

WINDOWS = {"hour": "H", "day": "D"}
_HEX = re.compile(r"[0-9a-f]{1,12}")
MAX_TIME = 10**10  # bucket sort keys hold 10-digit times (until the year 2286)
ALIGN = {None: ("a whole minute", 60), "hour": ("an hour boundary", 3600), "day": ("a UTC midnight", 86400)}


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request."""
    from pydantic import BaseModel, ConfigDict, Field

    class SummaryQuery(BaseModel):
        model_config = ConfigDict(extra="forbid")

        customer: Annotated[str, Field(min_length=1, max_length=MAX_CUSTOMER)]
        start_time: wire.WireInt = Field(ge=0, le=MAX_TIME)
        end_time: wire.WireInt = Field(ge=0, le=MAX_TIME)
        value_grouping_window: Literal["hour", "day"] | None = None
        limit: wire.WireInt = Field(default=10, ge=1, le=100)
        starting_after: Annotated[str, Field(max_length=5000)] | None = None
        ending_before: Annotated[str, Field(max_length=5000)] | None = None
        expand: list[str] | None = None

    return {"SummaryQuery": SummaryQuery}


_MODEL_NAMES = ("SummaryQuery",)


__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def _check(spec: "BaseModel") -> None:
    what, size = ALIGN[spec.value_grouping_window]
    for name in ("start_time", "end_time"):
        if getattr(spec, name) % size:
            raise invalid(f"Invalid {name}: must be {what} (a multiple of {size} seconds).", name)
    if spec.end_time <= spec.start_time:
        raise invalid("Invalid end_time: must be after start_time.", "end_time")
    if spec.starting_after and spec.ending_before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            "ending_before",
            "parameters_exclusive",
        )


def _hash(*parts) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def summary_id(meter: dict, customer: str, granularity: str, start: int, end: int) -> str:
    """Stable per meter, customer and window; a grouped window's id carries its start (cursors)."""
    if granularity in GRANULARITY:
        return f"mtrusg_{_hash(meter['scope'], meter['id'], customer, granularity)[:12]}{start:x}"
    return f"mtrusg_{_hash(meter['scope'], meter['id'], customer, start, end)[:24]}"


def _cursor(value: str, param: str, meter: dict, customer: str, granularity: str) -> int:
    prefix = summary_id(meter, customer, granularity, 0, 0)[:19]
    start = value[19:]
    if not value.startswith(prefix) or not _HEX.fullmatch(start):
        raise not_found(f"No such billing meter event summary: '{wire.clip(value)}'", param)
    return int(start, 16)


def aggregated_value(formula: str, bucket: Bucket) -> Decimal | int:
    if formula == "count":
        return bucket.count
    if formula == "last":
        return bucket.last[2] if bucket.last else Decimal(0)
    return bucket.total


def _summary(meter: dict, customer: str, granularity: str, start: int, end: int, bucket: Bucket) -> dict:
    return {
        "id": summary_id(meter, customer, granularity, start, end),
        "object": "billing.meter_event_summary",
        "aggregated_value": aggregated_value(meter["formula"], bucket),
        "end_time": end,
        "livemode": bool(meter["livemode"]),
        "meter": meter["id"],
        "start_time": start,
    }


def cover_ranges(start: int, end: int, granularities: str = "DHM") -> list[tuple[str, int, int]]:
    """The fewest day/hour/minute windows that tile [start, end) (whole minutes), as at most
    five runs (granularity, first start, end): whole days in the middle, whole hours beside
    them, whole minutes at the outer edges."""
    if start >= end or not granularities:
        return []
    g, smaller = granularities[0], granularities[1:]
    size = GRANULARITY[g]
    low, high = -(-start // size) * size, end - end % size
    if low >= high:
        return cover_ranges(start, end, smaller)
    return [*cover_ranges(start, low, smaller), (g, low, high), *cover_ranges(high, end, smaller)]


def total(scope: str, meter_id: str, customer: str, start: int, end: int, consistent: bool = False) -> Bucket:
    """The aggregates of [start, end) for one customer, merged from the covering buckets.

    Each run of windows is one range query, which reads only the buckets that exist: the
    work is bounded by the customer's usage, not by the length of the range."""
    pk = bucket_pk(scope, meter_id, customer)
    merged = Bucket()
    for g, low, high in cover_ranges(start, end):
        last = bucket_sk(g, high - GRANULARITY[g])
        items = store.query(settings().rollups_table, pk, bucket_sk(g, low), last, True, consistent)
        for item in items:
            merged.merge(Bucket.from_item(item))
    return merged


def _grouped(meter: dict, spec: "BaseModel") -> tuple[list[dict], bool]:
    granularity = WINDOWS[spec.value_grouping_window]
    size = GRANULARITY[granularity]
    low, high = spec.start_time, spec.end_time - size
    forward = spec.ending_before is not None
    if spec.starting_after:
        high = min(
            high, _cursor(spec.starting_after, "starting_after", meter, spec.customer, granularity) - size
        )
    if spec.ending_before:
        low = max(low, _cursor(spec.ending_before, "ending_before", meter, spec.customer, granularity) + size)
    if low > high:
        return [], False
    pk = bucket_pk(meter["scope"], meter["id"], spec.customer)
    items = store.query(
        settings().rollups_table, pk, bucket_sk(granularity, low), bucket_sk(granularity, high), forward
    )
    picked, has_more = [], False
    for item in items:
        if int(item["cnt"]) <= 0:
            continue
        if len(picked) == spec.limit:
            has_more = True
            break
        start = int(item["sk"].split("#")[1])
        picked.append(
            _summary(meter, spec.customer, granularity, start, start + size, Bucket.from_item(item))
        )
    if forward:
        picked.reverse()
    return picked, has_more


def list_summaries(who: Principal, meter_id: str, params: dict) -> dict:
    meter = meters.load(who, meter_id)
    spec = wire.validate(_models()["SummaryQuery"], params)
    _check(spec)
    url = f"/v1/billing/meters/{meter_id}/event_summaries"
    if spec.value_grouping_window:
        data, has_more = _grouped(meter, spec)
        return wire.list_object(url, data, has_more)
    bucket = total(who.scope, meter["id"], spec.customer, spec.start_time, spec.end_time)
    return wire.list_object(
        url, [_summary(meter, spec.customer, "", spec.start_time, spec.end_time, bucket)], False
    )
