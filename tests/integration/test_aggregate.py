"""Stream-driven rollups and event summaries against moto, delivered like Lambda does."""

import datetime
import time
from decimal import Decimal

import pytest

from metering import aggregate, clock, ingest, meters, summaries
from metering import aws as clients
from metering.accounts import Principal
from metering.errors import StripeError
from tests.streams import insert_record, stream_pump

A = Principal("acct_a", False)
HOUR, DAY = 3600, 86400
NOW = int(time.time())
TODAY = NOW - NOW % DAY
BASE = TODAY - 3 * DAY  # three UTC days ago, so every event of a test is in the past


@pytest.fixture(autouse=True)
def fresh_cache():
    yield
    clock.shift(0)


def meter(formula="sum", **spec):
    params = {
        "display_name": "m",
        "event_name": "tokens",
        "default_aggregation": {"formula": formula},
        **spec,
    }
    return meters.create(A, params)


def send(ts, value="1", customer="cus_1", identifier=None):
    params = {
        "event_name": "tokens",
        "timestamp": str(ts),
        "payload": {"stripe_customer_id": customer, "value": str(value)},
    }
    if identifier:
        params["identifier"] = identifier
    return ingest.create_v1(A, params)


def summary(m, start, end, window=None, customer="cus_1", **extra):
    params = {"customer": customer, "start_time": str(start), "end_time": str(end), **extra}
    if window:
        params["value_grouping_window"] = window
    return summaries.list_summaries(A, m["id"], params)


def values_of(listing) -> list:
    return [(s["start_time"], s["aggregated_value"]) for s in listing["data"]]


def test_sum_hourly_daily_and_one_summary(aws):
    m = meter()
    pump = stream_pump(aws)
    for ts, value in [
        (BASE + 60, "1.5"),
        (BASE + HOUR + 5, "2"),
        (BASE + DAY + 7, "-0.5"),
        (BASE + 120, "3"),
    ]:
        send(ts, value)
    pump.settle()
    (whole,) = summary(m, BASE, BASE + 2 * DAY)["data"]
    assert whole["aggregated_value"] == Decimal("6.0")
    assert whole["object"] == "billing.meter_event_summary" and whole["meter"] == m["id"]
    assert values_of(summary(m, BASE, BASE + 2 * DAY, "hour")) == [
        (BASE + DAY, Decimal("-0.5")),
        (BASE + HOUR, Decimal("2")),
        (BASE, Decimal("4.5")),
    ]
    assert values_of(summary(m, BASE, BASE + 2 * DAY, "day")) == [
        (BASE + DAY, Decimal("-0.5")),
        (BASE, Decimal("6.5")),
    ]
    # minute edges: [BASE+2min, BASE+1h+1min) holds only the hour's first event
    (edge,) = summary(m, BASE + 120, BASE + HOUR + 60)["data"]
    assert edge["aggregated_value"] == Decimal("5")


def test_count_and_last_use_the_latest_timestamp_not_the_latest_arrival(aws):
    count, last = meter("count", event_name="calls"), meter("last", event_name="tokens")
    pump = stream_pump(aws)
    send(BASE + 500, "7")
    send(BASE + 900, "9")
    send(BASE + 100, "1")  # arrives last, happened first
    ingest.create_v1(
        A, {"event_name": "calls", "payload": {"stripe_customer_id": "cus_1"}, "timestamp": str(BASE)}
    )
    pump.settle()
    assert summary(last, BASE, BASE + HOUR)["data"][0]["aggregated_value"] == Decimal("9")
    assert summary(last, BASE, BASE + 600)["data"][0]["aggregated_value"] == Decimal("7")
    assert summary(count, BASE, BASE + DAY)["data"][0]["aggregated_value"] == 1


def test_pre_aggregated_replacement_removes_the_old_value(aws):
    m = meter(event_time_window="hour")
    pump = stream_pump(aws)
    send(BASE + 10, "5")
    pump.settle()
    send(BASE + 20, "8")
    send(BASE + HOUR + 1, "1")
    pump.settle()
    assert values_of(summary(m, BASE, BASE + DAY, "hour")) == [
        (BASE + HOUR, Decimal("1")),
        (BASE, Decimal("8")),
    ]


def test_redelivered_batches_count_once(aws):
    m = meter()
    seen = []

    def deliver_twice(event):
        seen.append(event)
        aggregate.handle_batch(event["Records"])
        return aggregate.handle_batch(event["Records"])

    pump = stream_pump(aws, deliver_twice)
    for i in range(30):
        send(BASE + i * 60, "2")
    pump.settle()
    for event in seen:  # and once more, a whole replay
        aggregate.handle_batch(event["Records"])
    assert summary(m, BASE, BASE + DAY)["data"][0]["aggregated_value"] == Decimal("60")


def test_a_crash_after_commit_is_retried_without_double_counting(aws):
    m = meter()
    crashed = []

    def crash_once(event):
        result = aggregate.handle_batch(event["Records"])
        if not crashed:
            crashed.append(True)
            raise RuntimeError("timeout after the write")
        return result

    pump = stream_pump(aws, crash_once)
    for i in range(10):
        send(BASE + i, "1")
    pump.settle()
    assert crashed and summary(m, BASE, BASE + DAY)["data"][0]["aggregated_value"] == Decimal("10")


def test_grouped_summaries_page_newest_first_with_cursors(aws):
    m = meter()
    pump = stream_pump(aws)
    for h in range(12):
        send(BASE + h * HOUR, str(h))
    pump.settle()
    first = summary(m, BASE, BASE + DAY, "hour", limit="5")
    assert first["has_more"] and [s["start_time"] for s in first["data"]] == [
        BASE + h * HOUR for h in (11, 10, 9, 8, 7)
    ]
    second = summary(m, BASE, BASE + DAY, "hour", limit="5", starting_after=first["data"][-1]["id"])
    assert [s["aggregated_value"] for s in second["data"]] == [Decimal(h) for h in (6, 5, 4, 3, 2)]
    back = summary(m, BASE, BASE + DAY, "hour", limit="3", ending_before=second["data"][0]["id"])
    assert [s["start_time"] for s in back["data"]] == [BASE + h * HOUR for h in (9, 8, 7)]
    again = summary(m, BASE, BASE + DAY, "hour", limit="5")
    assert [s["id"] for s in again["data"]] == [s["id"] for s in first["data"]]  # ids are stable


@pytest.mark.parametrize(
    "window, start, end, param",
    [
        (None, BASE + 30, BASE + HOUR, "start_time"),
        (None, BASE, BASE + 90, "end_time"),
        ("hour", BASE + 60, BASE + DAY, "start_time"),
        ("day", BASE, BASE + HOUR, "end_time"),
        (None, BASE + HOUR, BASE, "end_time"),
    ],
)
def test_misaligned_ranges_name_their_param(aws, window, start, end, param):
    m = meter()
    with pytest.raises(StripeError) as exc:
        summary(m, start, end, window)
    assert exc.value.param == param and exc.value.status == 400


def test_other_accounts_meters_are_not_found(aws):
    m = meter()
    with pytest.raises(StripeError) as exc:
        summaries.list_summaries(
            Principal("acct_b", False), m["id"], {"customer": "c", "start_time": "0", "end_time": "60"}
        )
    assert exc.value.status == 404


def rfc3339(ts: int) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _items_read(action) -> int:
    """Items DynamoDB returned to us while `action` ran."""
    read = []

    def count(parsed, **_):
        read.append(len(parsed.get("Items", [])) + sum(len(v) for v in parsed.get("Responses", {}).values()))

    client = clients.dynamodb()
    client.meta.events.register("after-call.dynamodb", count)
    try:
        action()
    finally:
        client.meta.events.unregister("after-call.dynamodb", count)
    return sum(read)


def test_a_31_day_summary_reads_the_same_items_for_10_or_10000_events(aws):
    """10 events go through ingest and the stream; 10,000 through the aggregate function
    directly (stream records shaped like the events table's), on the same 10 days."""
    small, large = meter(event_name="tokens"), meter(event_name="calls")
    start = TODAY - 32 * DAY

    def ts(i):
        return TODAY - 30 * DAY + (i % 10) * 3 * DAY + (i * 7919) % DAY

    for i in range(10):
        send(ts(i), "1")
    stream_pump(aws).settle()
    images = [
        {"t": "raw", "st": "ok", "scope": A.scope, "mid": large["id"], "cust": "cus_1", "ts": ts(i)}
        | {"seq": f"{i:020d}", "ident": f"bulk-{i}", "v": "1"}
        for i in range(10_000)
    ]
    for i in range(0, len(images), 100):
        records = [insert_record(image, i + n) for n, image in enumerate(images[i : i + 100])]
        assert aggregate.handle_batch(records) == {"batchItemFailures": []}

    def daily(m):
        return lambda: summary(m, start, start + 31 * DAY, "day", limit="100")

    def whole(m):
        return lambda: summary(m, start, start + 31 * DAY)

    assert _items_read(daily(small)) == _items_read(daily(large)) == 10  # one daily bucket per day with usage
    assert _items_read(whole(small)) == _items_read(whole(large)) == 10
    assert sum(s["aggregated_value"] for s in daily(large)()["data"]) == 10_000
    assert whole(small)()["data"][0]["aggregated_value"] == 10
