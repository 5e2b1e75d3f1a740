"""Usage summaries and adjustments with the official stripe SDK against `metering-local serve`."""

import time
import uuid
from decimal import Decimal

import pytest
import requests
import stripe

from tests.contract.conftest import KEYS

HOUR, DAY = 3600, 86400
NOW = int(time.time())
BASE = NOW - NOW % DAY - 2 * DAY  # two UTC days ago: whole days and hours, all in the past


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


def new_meter(client, formula="sum", **extra):
    return client.v1.billing.meters.create(
        {
            "display_name": formula,
            "event_name": f"{formula}_{uuid.uuid4().hex[:10]}",
            "default_aggregation": {"formula": formula},
            **extra,
        }
    )


def send(client, meter, ts, value="1", customer="cus_1", identifier=None):
    params = {
        "event_name": meter.event_name,
        "timestamp": ts,
        "payload": {"stripe_customer_id": customer, "value": value},
    }
    if identifier:
        params["identifier"] = identifier
    return client.v1.billing.meter_events.create(params)


def summaries(client, meter, start=BASE, end=BASE + 2 * DAY, customer="cus_1", **extra):
    params = {"customer": customer, "start_time": start, "end_time": end, **extra}
    return client.v1.billing.meters.event_summaries.list(meter.id, params)


def settled(read, want, timeout=15.0):
    """Summaries are eventually consistent: poll until `read()` equals `want`."""
    deadline = time.time() + timeout
    while True:
        got = read()
        if got == want or time.time() > deadline:
            return got
        time.sleep(0.1)


def total(client, meter, **kw):
    return Decimal(str(summaries(client, meter, **kw).data[0].aggregated_value))


def test_hourly_and_daily_summaries_across_windows(client):
    meter = new_meter(client)
    for ts, value in [(BASE + 60, "1.25"), (BASE + HOUR + 1, "2"), (BASE + DAY + 5, "4"), (BASE + 120, "3")]:
        send(client, meter, ts, value)

    def hourly():
        page = summaries(client, meter, value_grouping_window="hour")
        return [(s.start_time, s.end_time, Decimal(str(s.aggregated_value))) for s in page.data]

    want = [
        (BASE + DAY, BASE + DAY + HOUR, Decimal("4")),
        (BASE + HOUR, BASE + 2 * HOUR, Decimal("2")),
        (BASE, BASE + HOUR, Decimal("4.25")),
    ]
    assert settled(hourly, want) == want
    daily = summaries(client, meter, value_grouping_window="day")
    assert [(s.start_time, s.aggregated_value) for s in daily.data] == [(BASE + DAY, 4), (BASE, 6.25)]
    one = summaries(client, meter)
    assert len(one.data) == 1 and one.data[0].object == "billing.meter_event_summary"
    assert one.data[0].aggregated_value == 10.25 and one.data[0].id.startswith("mtrusg_")
    assert one.data[0].meter == meter.id and one.data[0].livemode is False


def test_auto_paging_over_more_than_ten_windows(client):
    meter = new_meter(client, "count")
    for h in range(25):
        client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "timestamp": BASE + h * HOUR + 7,
                "payload": {"stripe_customer_id": "c"},
            }
        )

    def windows():
        page = summaries(client, meter, customer="c", value_grouping_window="hour", limit=4)
        return [(s.start_time, s.aggregated_value) for s in page.auto_paging_iter()]

    want = [(BASE + h * HOUR, 1) for h in reversed(range(25))]
    assert settled(windows, want) == want


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"start_time": BASE + 30}, "start_time"),
        ({"end_time": BASE + HOUR + 1}, "end_time"),
        ({"start_time": BASE + 60, "value_grouping_window": "hour"}, "start_time"),
        ({"end_time": BASE + HOUR, "value_grouping_window": "day"}, "end_time"),
        ({"value_grouping_window": "week"}, "value_grouping_window"),
    ],
)
def test_misaligned_ranges_are_rejected_with_their_param(client, extra, param):
    meter = new_meter(client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        summaries(client, meter, **extra)
    assert exc.value.http_status == 400 and exc.value.param == param


def test_negative_totals_are_reported_as_they_are(client):
    meter = new_meter(client)
    send(client, meter, BASE + 10, "2")
    send(client, meter, BASE + 20, "-7.5")
    assert settled(lambda: total(client, meter), Decimal("-5.5")) == Decimal("-5.5")


def test_summaries_of_another_accounts_meter_are_404(runner, client):
    meter = new_meter(client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        summaries(runner.client(KEYS[1]), meter)
    assert exc.value.http_status == 404


def cancel(client, meter, identifier):
    return client.v1.billing.meter_event_adjustments.create(
        {"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": identifier}}
    )


@pytest.mark.parametrize(
    "formula, after", [("sum", Decimal("4")), ("count", Decimal("1")), ("last", Decimal("4"))]
)
def test_cancel_for_sum_count_and_last(client, formula, after):
    meter = new_meter(client, formula)
    ident = f"late-{uuid.uuid4().hex[:8]}"
    send(client, meter, BASE + 10, "4")
    send(client, meter, BASE + 20, "9", identifier=ident)
    before = {"sum": Decimal("13"), "count": Decimal("2"), "last": Decimal("9")}[formula]
    assert settled(lambda: total(client, meter), before) == before
    adjustment = cancel(client, meter, ident)
    assert adjustment.object == "billing.meter_event_adjustment" and adjustment.status == "pending"
    assert adjustment.cancel.identifier == ident
    assert settled(lambda: total(client, meter), after) == after
    cancel(client, meter, ident)  # twice: never subtracted again
    time.sleep(1)
    assert total(client, meter) == after


def test_cancel_after_24_hours_is_refused(runner, client):
    meter = new_meter(client)
    ident = f"old-{uuid.uuid4().hex[:8]}"
    send(client, meter, BASE, "3", identifier=ident)
    requests.get(f"{runner.api_url}/_local/clock?offset={DAY + 60}")
    try:
        with pytest.raises(stripe.InvalidRequestError) as exc:
            cancel(client, meter, ident)
    finally:
        requests.get(f"{runner.api_url}/_local/clock?offset=0")
    assert exc.value.param == "cancel[identifier]" and "24 hours" in exc.value.user_message
    assert settled(lambda: total(client, meter), Decimal("3")) == Decimal("3")


def test_bad_cancels_name_their_param(client):
    meter = new_meter(client)
    with pytest.raises(stripe.InvalidRequestError) as exc:
        cancel(client, meter, "never-sent")
    assert exc.value.param == "cancel[identifier]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.billing.meter_event_adjustments.create({"event_name": meter.event_name, "type": "cancel"})
    assert exc.value.param == "cancel[identifier]"


def test_v2_adjustment_and_negative_correction(client):
    meter = new_meter(client)
    ident = f"v2-{uuid.uuid4().hex[:8]}"
    send(client, meter, BASE + 10, "10", identifier=ident)
    send(client, meter, BASE + 20, "-2.5")
    out = client.v2.billing.meter_event_adjustments.create(
        {"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": ident}}
    )
    assert out.object == "v2.billing.meter_event_adjustment" and out.id.startswith("mtradj_")
    assert settled(lambda: total(client, meter), Decimal("-2.5")) == Decimal("-2.5")
