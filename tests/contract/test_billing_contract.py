"""Billing with the official stripe SDK against `metering-local serve`: customer -> metered
price -> subscription -> meter events -> invoice preview (issue 11), and the test-clock
cycle: advance past the period end -> draft -> late usage in grace counts -> advance past
the grace -> finalized and frozen (issue 12)."""

import time
import uuid
from decimal import Decimal

import pytest
import stripe

from tests.contract.conftest import KEYS

DAY = 86400


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


def new_meter(client, formula="sum"):
    return client.v1.billing.meters.create(
        {
            "display_name": f"billing {formula}",
            "event_name": f"billing_{formula}_{uuid.uuid4().hex[:10]}",
            "default_aggregation": {"formula": formula},
        }
    )


def metered_price(client, meter, **amount):
    return client.v1.prices.create(
        {
            "currency": "usd",
            "product_data": {"name": "API calls"},
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            **(amount or {"unit_amount_decimal": "0.5"}),
        }
    )


def eventually(read, check, timeout=15.0):
    """Usage reaches invoices through the stream: poll until `check(read())`."""
    deadline = time.time() + timeout
    while True:
        value = read()
        if check(value) or time.time() > deadline:
            return value
        time.sleep(0.2)


def test_customer_price_subscription_events_preview(client):
    meter = new_meter(client)
    customer = client.v1.customers.create(
        {"email": "jenny@example.com", "name": "Jenny", "metadata": {"a": "1"}}
    )
    assert (
        customer.id.startswith("cus_")
        and customer.email == "jenny@example.com"
        and customer.metadata["a"] == "1"
    )
    assert client.v1.customers.retrieve(customer.id).name == "Jenny"
    assert customer.id in [c.id for c in client.v1.customers.list({"email": "jenny@example.com"}).data]

    price = metered_price(client, meter)
    assert price.recurring.meter == meter.id and price.unit_amount_decimal == Decimal("0.5")
    tiered = client.v1.prices.create(
        {
            "currency": "usd",
            "product": price.product,
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter.id},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": 10, "unit_amount": 0, "flat_amount": 100},
                {"up_to": "inf", "unit_amount_decimal": "2.5"},
            ],
        }
    )
    tiers = client.v1.prices.retrieve(tiered.id, {"expand": ["tiers"]}).tiers
    assert [t.up_to for t in tiers] == [10, None] and tiers[1].unit_amount_decimal == Decimal("2.5")
    assert client.v1.products.retrieve(price.product).name == "API calls"

    now = int(time.time())
    start = now - 2 * DAY
    sub = client.v1.subscriptions.create(
        {
            "customer": customer.id,
            "items": [{"price": price.id}, {"price": tiered.id}],
            "backdate_start_date": start,
        }
    )
    items = sub["items"].data
    assert sub.status == "active" and [i.current_period_start for i in items] == [start, start]
    assert client.v1.subscription_items.retrieve(items[0].id).subscription == sub.id
    first = client.v1.invoices.retrieve(sub.latest_invoice)
    assert (first.billing_reason, first.status, first.amount_due) == ("subscription_create", "paid", 0)

    for ts, value in [(start - 1, "1000"), (start, "10"), (start + 90, "2.5"), (now - 5, "3")]:
        client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "timestamp": ts,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )

    def preview():
        return client.v1.invoices.create_preview({"customer": customer.id, "subscription": sub.id})

    upcoming = eventually(preview, lambda inv: inv.total == 122)
    assert upcoming.id.startswith("upcoming_in_") and upcoming.billing_reason == "upcoming"
    assert upcoming.status == "draft"
    lines = upcoming.lines.data
    assert [line.quantity_decimal for line in lines] == [Decimal("15.5"), Decimal("15.5")]
    assert [line.quantity for line in lines] == [15, 15]
    assert [line.amount for line in lines] == [8, 100 + 14]  # 7.75 -> 8; 100 flat + 5.5 x 2.5 = 13.75 -> 14
    assert upcoming.subtotal == upcoming.total == upcoming.amount_due == 8 + 114

    client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "timestamp": now - 4,
            "payload": {"stripe_customer_id": customer.id, "value": "-100"},
        }
    )
    zero = eventually(preview, lambda inv: inv.lines.data[0].quantity_decimal == 0)
    assert [line.amount for line in zero.lines.data] == [
        0,
        100,
    ]  # negative usage bills 0 (the base fee stays)
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id,
        {"customer": customer.id, "start_time": start - start % 60 + 60, "end_time": now - now % 60 + 60},
    )
    assert summary.data[0].aggregated_value < 0  # summaries keep reporting the true total

    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.invoices.create_preview({"customer": customer.id})
    assert exc.value.code == "invoice_upcoming_none" and exc.value.http_status == 404


def test_errors_and_tenancy(runner, client):
    customer = client.v1.customers.create({})
    other = runner.client(KEYS[1])
    with pytest.raises(stripe.InvalidRequestError) as exc:
        other.v1.customers.retrieve(customer.id)
    assert exc.value.http_status == 404 and exc.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.prices.create(
            {
                "currency": "usd",
                "product_data": {"name": "x"},
                "recurring": {"interval": "month", "usage_type": "metered"},
                "unit_amount": 1,
            }
        )
    assert exc.value.param == "recurring[meter]"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.customers.create({"nonsense": "1"})
    assert exc.value.code == "parameter_unknown" and exc.value.param == "nonsense"
    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True


def test_test_clock_cycle_draft_grace_finalization_and_frozen_invoice(client):
    """test clock -> customer -> metered prices -> subscription -> events -> preview -> advance past
    the period end -> draft -> late event in grace counts -> advance past the grace ->
    finalized with max(0, total) -> cancel and negative events leave it unchanged."""
    now = int(time.time())
    t0 = now - now % 60 - 3 * DAY  # real past: meter events with these timestamps are accepted
    tokens, credits = new_meter(client), new_meter(client)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": t0, "name": "cycle"})
    customer = client.v1.customers.create({"email": "clock@example.com", "test_clock": clock.id})
    assert customer.test_clock == clock.id
    assert customer.id in [c.id for c in client.v1.customers.list({"test_clock": clock.id}).data]
    assert customer.id not in [c.id for c in client.v1.customers.list({"limit": 100}).data]

    def daily(meter):
        return client.v1.prices.create(
            {
                "currency": "usd",
                "product_data": {"name": meter.display_name},
                "recurring": {"interval": "day", "usage_type": "metered", "meter": meter.id},
                "unit_amount": 3,
            }
        )

    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": daily(tokens).id}, {"price": daily(credits).id}]}
    )
    assert [i.current_period_end for i in sub["items"].data] == [t0 + DAY, t0 + DAY]

    def event(meter, ts, value, identifier):
        client.v1.billing.meter_events.create(
            {
                "event_name": meter.event_name,
                "timestamp": ts,
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer.id, "value": value},
            }
        )

    def period_total(meter):
        params = {"customer": customer.id, "start_time": t0, "end_time": t0 + DAY}
        summary = client.v1.billing.meters.event_summaries.list(meter.id, params).data[0]
        return Decimal(str(summary.aggregated_value))

    def advance(to):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": to})
        ready = eventually(
            lambda: client.v1.test_helpers.test_clocks.retrieve(clock.id), lambda c: c.status == "ready"
        )
        assert ready.frozen_time == to

    tag = uuid.uuid4().hex[:8]
    event(tokens, t0 + 10, "5", f"a-{tag}")
    event(tokens, t0 + 20, "6", f"b-{tag}")
    event(credits, t0 + 30, "-4", f"c-{tag}")
    advance(t0 + 12 * 3600)
    preview = eventually(
        lambda: client.v1.invoices.create_preview({"subscription": sub.id}),
        lambda inv: inv.lines.data[0].quantity_decimal == 11,
    )
    assert [line.quantity_decimal for line in preview.lines.data] == [Decimal(11), Decimal(0)]

    advance(t0 + DAY + 60)
    (draft,) = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data
    assert (draft.billing_reason, draft.period_start, draft.period_end) == (
        "subscription_cycle",
        t0,
        t0 + DAY,
    )
    assert draft.automatically_finalizes_at == t0 + DAY + 3600 and draft.auto_advance is True
    assert [line.quantity_decimal for line in draft.lines.data] == [Decimal(11), Decimal(0)]

    event(tokens, t0 + DAY - 1, "100", f"late-{tag}")  # in the period, received during the grace period
    assert eventually(lambda: period_total(tokens), lambda total: total == 111) == 111
    advance(t0 + DAY + 3600 + 120)
    final = client.v1.invoices.retrieve(draft.id)
    assert final.status == "open" and final.number is not None
    assert final.status_transitions.finalized_at == t0 + DAY + 3600
    assert [line.quantity_decimal for line in final.lines.data] == [Decimal(111), Decimal(0)]  # max(0, -4)
    assert final.amount_due == 333

    client.v1.billing.meter_event_adjustments.create(
        {"event_name": tokens.event_name, "type": "cancel", "cancel": {"identifier": f"b-{tag}"}}
    )
    event(tokens, t0 + DAY - 2, "-500", f"neg-{tag}")
    assert eventually(lambda: period_total(tokens), lambda total: total == -395) == -395
    assert client.v1.invoices.retrieve(draft.id) == final
    assert [line.quantity_decimal for line in client.v1.invoices.line_items.list(draft.id).data] == [
        Decimal(111),
        Decimal(0),
    ]
    types = [e.type for e in client.v1.events.list({"limit": 100}).data]
    assert {"invoice.created", "invoice.finalized", "test_helpers.test_clock.ready"} <= set(types)
