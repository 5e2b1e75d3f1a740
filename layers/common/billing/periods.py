"""Billing cycle arithmetic: period boundaries from an anchor, to the second, in UTC.

Boundaries are anchor + k intervals (k any integer). Days and weeks are fixed lengths;
months and years keep the anchor's day of month and time of day, clamped to the last
day of shorter months (an anchor on the 31st gives Feb 28/29, Mar 31, Apr 30, ...),
always counted from the anchor itself, so a clamped month never shifts later ones.
A period is [start, end): an event at `end - 1` is in it, one at `end` in the next.
"""

import calendar
from datetime import UTC, datetime

FIXED = {"day": 86400, "week": 7 * 86400}
MAX_COUNT = {"day": 1095, "week": 156, "month": 36, "year": 3}  # three years at most


def boundary(anchor: int, interval: str, count: int, k: int) -> int:
    """The k-th boundary of the cycle (k = 0 is the anchor)."""
    if interval in FIXED:
        return anchor + k * count * FIXED[interval]
    months = k * count * (12 if interval == "year" else 1)
    moment = datetime.fromtimestamp(anchor, UTC)
    year, month0 = divmod(moment.month - 1 + months, 12)
    year += moment.year
    month = month0 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _approximate_k(anchor: int, interval: str, count: int, t: int) -> int:
    length = FIXED.get(interval) or (30.436875 * 86400 * (12 if interval == "year" else 1))
    return int((t - anchor) // (length * count))


def next_boundary(anchor: int, interval: str, count: int, t: int) -> int:
    """The first boundary strictly after t."""
    k = _approximate_k(anchor, interval, count, t)
    while boundary(anchor, interval, count, k) > t:
        k -= 1
    while boundary(anchor, interval, count, k) <= t:
        k += 1
    return boundary(anchor, interval, count, k)


def period_containing(anchor: int, interval: str, count: int, t: int) -> tuple[int, int]:
    """The cycle period [start, end) that contains t."""
    end = next_boundary(anchor, interval, count, t)
    k = _approximate_k(anchor, interval, count, end)
    while boundary(anchor, interval, count, k) < end:
        k += 1
    while boundary(anchor, interval, count, k) > end:
        k -= 1
    return boundary(anchor, interval, count, k - 1), end


def first_period(start: int, anchor: int, interval: str, count: int) -> tuple[int, int]:
    """The first period of a subscription starting at `start` on the anchor's cycle: from the
    start to the first boundary after it (shorter than an interval when the anchor is later)."""
    return start, next_boundary(anchor, interval, count, start)
