"""Test clocks (issue 12): customers join at creation, an advance runs every boundary of the
clock in time order (period ends, then finalizations) and moves its customers' frozen time."""

import time

import pytest

from billing import customers, cycles, events, invoices, storage, subscriptions, test_clocks
from metering import customer_clocks
from metering.accounts import Principal
from metering.errors import StripeError
from tests.billing_fixtures import (  # noqa: F401 - billing_fixture provides the `billing` fixture
    DAY,
    HOUR,
    billing_fixture,
    metered_price,
    new_meter,
    principal,
    send,
)
from tests.streams import stream_pump

T0 = int(time.time()) - int(time.time()) % 60 - 3 * DAY  # in the real past: meter events are accepted


def clocked_subscription(who, interval="day"):
    meter = new_meter(who)
    price = metered_price(who, meter, interval=interval, unit_amount="3")
    clock = test_clocks.create(who, {"frozen_time": str(T0), "name": "c"})
    customer = customers.create(who, {"test_clock": clock["id"], "email": "t@example.com"})
    sub = subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    return meter, clock, customer, sub


def test_a_customer_joins_a_clock_and_lives_on_its_time(billing):
    who = principal()
    meter, clock, customer, sub = clocked_subscription(who)
    assert customer["test_clock"] == clock["id"] and customer["created"] == T0
    assert sub["start_date"] == T0 and sub["items"]["data"][0]["current_period_end"] == T0 + DAY
    assert sub["test_clock"] == clock["id"]
    assert customer_clocks.frozen_time(who.scope, False, customer["id"]) == T0
    assert customer_clocks.frozen_time(who.scope, False, "cus_not_on_a_clock") is None
    assert customer_clocks.frozen_time(Principal(who.account_id, True).scope, True, customer["id"]) is None
    assert customers.list_customers(who, {})["data"] == []  # clocked customers only with the filter
    assert [c["id"] for c in customers.list_customers(who, {"test_clock": clock["id"]})["data"]] == [
        customer["id"]
    ]
    assert subscriptions.list_subscriptions(who, {})["data"] == []
    assert [s["id"] for s in subscriptions.list_subscriptions(who, {"test_clock": clock["id"]})["data"]] == [
        sub["id"]
    ]
    assert invoices.list_invoices(who, {})["data"] == []
    assert len(invoices.list_invoices(who, {"customer": customer["id"]})["data"]) == 1

    send(who, meter, customer["id"], T0 + 10, "4")
    with pytest.raises(StripeError) as err:  # timestamps are checked against the frozen time
        send(who, meter, customer["id"], T0 + 2 * HOUR, "100")
    assert err.value.code == "timestamp_in_future"
    stream_pump(billing).settle()
    preview = invoices.preview(who, {"customer": customer["id"]})
    assert preview["created"] == T0 and preview["total"] == 0  # [start, frozen time) is empty
    test_clocks.advance(who, clock["id"], {"frozen_time": str(T0 + HOUR)})
    assert invoices.preview(who, {"customer": customer["id"]})["lines"]["data"][0]["quantity_decimal"] == "4"
    test_clocks.advance(who, clock["id"], {"frozen_time": str(T0 + 3 * HOUR)})
    send(who, meter, customer["id"], T0 + 2 * HOUR, "100")  # in the past of the clock now
    stream_pump(billing).settle()
    assert invoices.preview(who, {"customer": customer["id"]})["total"] == 312


def test_an_advance_runs_period_ends_then_finalizations_in_time_order(billing):
    who = principal()
    meter, clock, customer, sub = clocked_subscription(who)
    send(who, meter, customer["id"], T0 + 5, "2")
    stream_pump(billing).settle()
    moved = test_clocks.advance(
        who, clock["id"], {"frozen_time": str(T0 + 2 * DAY)}
    )  # two intervals: the limit
    assert (moved["status"], moved["frozen_time"], moved["status_details"]) == ("ready", T0 + 2 * DAY, {})
    cycle = invoices.list_invoices(who, {"subscription": sub["id"]})["data"][:2]
    second, first = cycle
    assert (first["period_start"], first["created"], first["status"]) == (T0, T0 + DAY, "open")
    assert first["status_transitions"]["finalized_at"] == T0 + DAY + HOUR
    assert first["lines"]["data"][0]["quantity_decimal"] == "2" and first["total"] == 6
    assert (second["period_start"], second["status"]) == (T0 + DAY, "draft")
    assert second["automatically_finalizes_at"] == T0 + 2 * DAY + HOUR and second["total"] == 0
    item = subscriptions.retrieve(who, sub["id"], {})["items"]["data"][0]
    assert item["current_period_start"] == T0 + 2 * DAY
    types = [e["type"] for e in reversed(events.list_events(who, {"limit": "100"})["data"])]
    order = [
        t
        for t in types
        if t.startswith(("invoice.", "test_helpers.test_clock.a", "test_helpers.test_clock.r"))
    ]
    assert order[3:] == [  # after the subscription's first invoice (created, finalized, paid)
        "test_helpers.test_clock.advancing",
        "invoice.created",
        "invoice.finalized",
        "invoice.created",
        "test_helpers.test_clock.ready",
    ]
    assert customer_clocks.frozen_time(who.scope, False, customer["id"]) == T0 + 2 * DAY
    # Usage of the second period sent now (in the clock's past: events may not be sent ahead
    # of a clock) lands in its draft at finalization.
    send(who, meter, customer["id"], T0 + DAY + 5, "7")
    stream_pump(billing).settle()
    assert invoices.finalize_api(who, second["id"], {})["total"] == 21


def test_advance_limits_and_errors(billing):
    who = principal()
    _, clock, customer, _ = clocked_subscription(who)
    for frozen, param in [(T0, "frozen_time"), (T0 - 1, "frozen_time"), (T0 + 2 * DAY + 1, "frozen_time")]:
        with pytest.raises(StripeError) as exc:
            test_clocks.advance(who, clock["id"], {"frozen_time": str(frozen)})
        assert exc.value.param == param
    with pytest.raises(StripeError):
        test_clocks.create(Principal(who.account_id, True), {"frozen_time": str(T0)})
    for _ in range(2):
        customers.create(who, {"test_clock": clock["id"]})
    with pytest.raises(StripeError) as exc:
        customers.create(who, {"test_clock": clock["id"]})
    assert exc.value.param == "test_clock"
    price = metered_price(who, new_meter(who), interval="day")
    for _ in range(2):
        subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    with pytest.raises(StripeError) as exc:
        subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    assert exc.value.param == "customer"  # 3 subscriptions per customer on a clock


def test_an_advance_cut_short_is_finished_by_the_scheduler(billing, monkeypatch):
    who = principal()
    _, clock, _, sub = clocked_subscription(who)
    original = cycles.advance_clock
    monkeypatch.setattr(
        cycles, "advance_clock", lambda who, clock_id: original(who, clock_id, budget_seconds=-1)
    )
    moved = test_clocks.advance(who, clock["id"], {"frozen_time": str(T0 + DAY + 60)})
    assert moved["status"] == "advancing" and moved["status_details"] == {
        "advancing": {"target_frozen_time": T0 + DAY + 60}
    }
    with pytest.raises(StripeError) as exc:
        test_clocks.advance(who, clock["id"], {"frozen_time": str(T0 + DAY + 120)})
    assert exc.value.code == "test_clock_advancing"
    monkeypatch.setattr(cycles, "advance_clock", original)
    cycles.handle({}, lambda: 600_000)
    assert test_clocks.retrieve(who, clock["id"], {})["status"] == "ready"
    assert [
        i["billing_reason"] for i in invoices.list_invoices(who, {"subscription": sub["id"]})["data"]
    ] == [
        "subscription_cycle",
        "subscription_create",
    ]
    left = storage.due_keys(storage.shard_of(clock["id"]), int(time.time()) + DAY)
    assert all(k["sk"] != test_clocks.sk(clock["id"]) for k in left)  # its resume entry is gone


def test_deleting_a_clock_deletes_its_customers_and_cancels_their_subscriptions(billing):
    who = principal()
    _, clock, customer, sub = clocked_subscription(who)
    assert test_clocks.delete(who, clock["id"], {}) == {
        "id": clock["id"],
        "object": "test_helpers.test_clock",
        "deleted": True,
    }
    assert customers.retrieve(who, customer["id"], {})["deleted"] is True
    assert subscriptions.retrieve(who, sub["id"], {})["status"] == "canceled"
    with pytest.raises(StripeError) as exc:
        test_clocks.retrieve(who, clock["id"], {})
    assert exc.value.status == 404


def test_customers_without_clocks_cost_no_extra_request_per_event(billing):
    """The clock guard is read with the meter (one BatchGetItem); no clock, no other read."""
    from metering import aws as clients
    from metering import ingest, meters

    calls = []

    def count(params, model, **_):
        calls.append(model.name)

    who = principal()
    meters.create(who, {"display_name": "m", "event_name": "e", "default_aggregation": {"formula": "count"}})
    client = clients.dynamodb()
    client.meta.events.register("provide-client-params.dynamodb.*", count)
    try:
        for n in range(5):
            ingest.create_v1(who, {"event_name": "e", "payload": {"stripe_customer_id": f"cus_{n}"}})
        assert calls.count("BatchGetItem") == 5 and "GetItem" not in calls  # meter + guard, together
        assert calls.count("PutItem") == 5
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.*", count)
    live = Principal(who.account_id, True)
    assert customer_clocks.frozen_time(live.scope, True, "cus_1") is None  # live: never a read
