"""Billing cycle boundaries: fixed-length days and weeks, month and year anchors kept (or
clamped to the month's last day) from the anchor itself, periods that tile time."""

import calendar
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from billing import periods

anchors = st.integers(946684800, 4102444800)  # 2000..2100
cycles = st.sampled_from(
    [("day", 1), ("day", 7), ("week", 1), ("week", 2), ("month", 1), ("month", 3), ("year", 1)]
)


def moment(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@settings(max_examples=200, deadline=None)
@given(anchor=anchors, cycle=cycles, k=st.integers(-30, 30))
def test_boundaries_increase_and_keep_the_anchor(anchor, cycle, k):
    interval, count = cycle
    this, after = (
        periods.boundary(anchor, interval, count, k),
        periods.boundary(anchor, interval, count, k + 1),
    )
    assert after > this
    if interval in periods.FIXED:
        assert after - this == periods.FIXED[interval] * count
        return
    a, b = moment(anchor), moment(this)
    assert (b.hour, b.minute, b.second) == (a.hour, a.minute, a.second)
    assert b.day == min(a.day, calendar.monthrange(b.year, b.month)[1])


@settings(max_examples=200, deadline=None)
@given(anchor=anchors, cycle=cycles, offset=st.integers(-(10**8), 10**8))
def test_next_boundary_is_the_first_one_after_t(anchor, cycle, offset):
    interval, count = cycle
    t = anchor + offset
    end = periods.next_boundary(anchor, interval, count, t)
    assert end > t
    start, end2 = periods.period_containing(anchor, interval, count, t)
    assert end2 == end and start <= t < end
    assert periods.next_boundary(anchor, interval, count, start - 1) == start  # start is a boundary


def test_a_31st_anchor_walks_the_month_ends_without_drifting():
    anchor = int(datetime(2028, 1, 31, 9, 30, tzinfo=UTC).timestamp())
    days = [moment(periods.boundary(anchor, "month", 1, k)).date().isoformat() for k in range(6)]
    assert days == ["2028-01-31", "2028-02-29", "2028-03-31", "2028-04-30", "2028-05-31", "2028-06-30"]
    leap = int(datetime(2028, 2, 29, tzinfo=UTC).timestamp())
    assert moment(periods.boundary(leap, "year", 1, 1)).date().isoformat() == "2029-02-28"
    assert moment(periods.boundary(leap, "year", 1, 4)).date().isoformat() == "2032-02-29"


def test_the_first_period_runs_to_the_anchor_when_the_anchor_is_later():
    start = int(datetime(2028, 3, 10, tzinfo=UTC).timestamp())
    anchor = int(datetime(2028, 3, 15, tzinfo=UTC).timestamp())
    assert periods.first_period(start, anchor, "month", 1) == (start, anchor)
    assert periods.first_period(start, start, "month", 1)[1] == int(
        datetime(2028, 4, 10, tzinfo=UTC).timestamp()
    )
