"""Cancellations against moto: conditional cancel, effects through the stream, bad input."""

import json
from decimal import Decimal

import boto3
import pytest

from metering import adjustments, clock, ingest, meters, summaries
from metering.accounts import Principal
from metering.errors import StripeError
from tests.conftest import sample_event
from tests.integration.test_aggregate import BASE, DAY, HOUR
from tests.streams import stream_pump

A = Principal("acct_a", False)


@pytest.fixture(autouse=True)
def fresh_cache():
    yield
    clock.shift(0)


def meter(formula="sum", name="tokens", **spec):
    params = {"display_name": "m", "event_name": name, "default_aggregation": {"formula": formula}, **spec}
    return meters.create(A, params)


def send(identifier, ts, value="1", name="tokens"):
    payload = {"stripe_customer_id": "cus_1", "value": str(value)}
    ingest.create_v1(
        A, {"event_name": name, "timestamp": str(ts), "identifier": identifier, "payload": payload}
    )


def cancel(identifier, name="tokens", **extra):
    return adjustments.create_v1(
        A, {"event_name": name, "type": "cancel", "cancel": {"identifier": identifier}, **extra}
    )


def usage(m, start=BASE, end=BASE + DAY):
    return summaries.list_summaries(
        A, m["id"], {"customer": "cus_1", "start_time": str(start), "end_time": str(end)}
    )["data"][0]["aggregated_value"]


def stored(aws, identifier) -> dict:
    from metering.event_store import event_key
    from metering.store import from_item

    key = {k: {"S": v} for k, v in event_key(A.scope, identifier).items()}
    return from_item(
        boto3.client("dynamodb").get_item(TableName=aws.tables["EventsTable"], Key=key).get("Item")
    )


@pytest.mark.parametrize("formula, expected", [("sum", Decimal("5")), ("count", 2), ("last", Decimal("4"))])
def test_cancel_stops_counting_for_every_formula(aws, formula, expected):
    m = meter(formula)
    pump = stream_pump(aws)
    send("e1", BASE + 10, "1")
    send("e2", BASE + 20, "4")
    send("e3", BASE + 30, "7")
    pump.settle()
    out = cancel("e3")
    assert out == {
        "object": "billing.meter_event_adjustment",
        "livemode": False,
        "status": "pending",
        "event_name": "tokens",
        "type": "cancel",
        "cancel": {"identifier": "e3"},
    }
    pump.settle()
    assert usage(m) == expected


def test_cancelling_twice_subtracts_once(aws):
    m = meter()
    pump = stream_pump(aws)
    send("e1", BASE, "10")
    send("e2", BASE, "5")
    pump.settle()
    cancel("e1")
    cancel("e1")
    pump.settle()
    cancel("e1")
    pump.settle()
    assert usage(m) == Decimal("5")
    assert stored(aws, "e1")["st"] == "cancelled"


def test_last_falls_back_through_several_cancels(aws):
    m = meter("last")
    pump = stream_pump(aws)
    for i, value in enumerate(["3", "8", "2"]):
        send(f"e{i}", BASE + HOUR + i, value)
    pump.settle()
    cancel("e2")
    pump.settle()
    assert usage(m) == Decimal("8")
    cancel("e1")
    cancel("e0")
    pump.settle()
    hourly = summaries.list_summaries(
        A,
        m["id"],
        {
            "customer": "cus_1",
            "start_time": str(BASE),
            "end_time": str(BASE + DAY),
            "value_grouping_window": "hour",
        },
    )
    assert hourly["data"] == []  # no event counts in any window any more


def test_negative_values_correct_totals_below_zero(aws):
    m = meter()
    pump = stream_pump(aws)
    send("e1", BASE, "2")
    send("fix", BASE + 1, "-5.5")
    pump.settle()
    assert usage(m) == Decimal("-3.5")


def test_pre_aggregated_cancel_removes_the_window_only_while_it_holds_it(aws):
    m = meter(event_time_window="hour")
    pump = stream_pump(aws)
    send("old", BASE + 10, "5")
    send("new", BASE + 20, "8")  # replaces "old" in the window
    pump.settle()
    cancel("old")  # already replaced: nothing changes
    pump.settle()
    assert usage(m) == Decimal("8")
    cancel("new")
    pump.settle()
    assert usage(m) == Decimal("0")
    send("later", BASE + 30, "2")  # the window takes a new event again
    pump.settle()
    assert usage(m) == Decimal("2")


def test_cancel_after_24_hours_is_refused_and_changes_nothing(aws):
    m = meter()
    pump = stream_pump(aws)
    send("e1", BASE, "3")
    clock.shift(24 * 3600 + 1)
    with pytest.raises(StripeError) as exc:
        cancel("e1")
    assert (
        exc.value.status == 400
        and exc.value.param == "cancel[identifier]"
        and "24 hours" in exc.value.message
    )
    pump.settle()
    assert usage(m) == Decimal("3") and stored(aws, "e1")["st"] == "ok"


@pytest.mark.parametrize(
    "params, param",
    [
        ({"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "nope"}}, "cancel[identifier]"),
        ({"event_name": "other", "type": "cancel", "cancel": {"identifier": "e1"}}, "event_name"),
        ({"event_name": "tokens", "type": "cancel"}, "cancel[identifier]"),
        ({"event_name": "tokens", "type": "cancel", "cancel": {}}, "cancel[identifier]"),
        ({"event_name": "tokens", "type": "refund", "cancel": {"identifier": "e1"}}, "type"),
        ({"type": "cancel", "cancel": {"identifier": "e1"}}, "event_name"),
        ({"event_name": "tokens", "cancel": {"identifier": "e1"}, "extra": "x"}, "extra"),
    ],
)
def test_bad_adjustments_name_their_param_and_change_nothing(aws, params, param):
    meter()
    meter(name="other")
    send("e1", BASE, "3")
    with pytest.raises(StripeError) as exc:
        adjustments.create_v1(A, params)
    assert exc.value.status == 400 and exc.value.param == param
    assert stored(aws, "e1")["st"] == "ok"


def test_other_accounts_cannot_cancel(aws):
    meter()
    send("e1", BASE, "3")
    with pytest.raises(StripeError) as exc:
        adjustments.create_v1(
            Principal("acct_b", False), {"event_name": "tokens", "cancel": {"identifier": "e1"}}
        )
    assert exc.value.param == "cancel[identifier]"
    assert stored(aws, "e1")["st"] == "ok"


def test_v2_adjustment_has_an_id(aws):
    meter()
    send("e1", BASE, "3")
    out = adjustments.create_v2(A, {"event_name": "tokens", "type": "cancel", "cancel": {"identifier": "e1"}})
    assert out["object"] == "v2.billing.meter_event_adjustment" and out["id"].startswith("mtradj_")
    assert out["status"] == "pending" and out["created"].endswith("Z")


@pytest.mark.parametrize(
    "sample, identifier",
    [
        ("create_meter_event_adjustment.json", "sample-event-1"),
        ("create_meter_event_adjustment_v2.json", "sample-event-v2"),
    ],
)
def test_sample_events_cancel_through_the_handler(aws, handler, sample, identifier):
    who = Principal("acct_sample", False)
    meters.create(
        who,
        {
            "display_name": "AI tokens",
            "event_name": "ai_tokens",
            "default_aggregation": {"formula": "sum"},
            "value_settings": {"event_payload_key": "tokens"},
        },
    )
    payload = {"stripe_customer_id": "cus_NciAYcXfLnqBoz", "tokens": "25"}
    ingest.create_v1(who, {"event_name": "ai_tokens", "identifier": identifier, "payload": payload})
    response = handler("AdjustFunction", sample_event(sample))
    assert response["statusCode"] == 200, response["body"]
    assert json.loads(response["body"])["cancel"] == {"identifier": identifier}
