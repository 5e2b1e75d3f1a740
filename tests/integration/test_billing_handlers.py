"""The billing handlers invoked with the events/ files against moto (ids of the sample
objects, `*_sample`, replaced by the ones the previous samples created)."""

import json

import pytest

from metering import clock, meters
from metering.accounts import Principal
from tests.billing_fixtures import billing_fixture, send  # noqa: F401 - provides the `billing` fixture
from tests.conftest import sample_event
from tests.streams import stream_pump

WHO = Principal("acct_sample", False)


@pytest.fixture
def sample_account(billing):
    from metering.accounts import create_key

    create_key(account_id="acct_sample", secret="sk_test_sample")
    return billing


class Samples:
    """Invokes functions with sample events, replacing sample ids as objects get created."""

    def __init__(self, handler):
        self.handler, self.ids = handler, {}

    def __call__(self, function: str, name: str, status: int = 200) -> dict:
        text = json.dumps(sample_event(name))
        for sample, real in self.ids.items():
            text = text.replace(sample, real)
        result = self.handler(function, json.loads(text))
        assert result["statusCode"] == status, (name, result["body"])
        return json.loads(result["body"])


def test_every_billing_sample_event(sample_account, handler):
    call = Samples(handler)
    meter = meters.create(
        WHO,
        {"display_name": "AI tokens", "event_name": "ai_tokens", "default_aggregation": {"formula": "sum"}},
    )
    call.ids["mtr_sample"] = meter["id"]

    customer = call("BillingCatalogFunction", "create_customer.json")
    call.ids["cus_sample"] = customer["id"]
    assert customer["metadata"] == {"plan": "pro"}
    assert [c["id"] for c in call("BillingCatalogFunction", "list_customers.json")["data"]] == [
        customer["id"]
    ]
    assert call("BillingCatalogFunction", "retrieve_customer.json")["email"] == "jenny@example.com"
    assert call("BillingCatalogFunction", "update_customer.json")["metadata"] == {}

    product = call("BillingCatalogFunction", "create_product.json")
    call.ids["prod_sample"] = product["id"]
    assert call("BillingCatalogFunction", "retrieve_product.json")["name"] == "AI tokens"
    assert product["id"] in [p["id"] for p in call("BillingCatalogFunction", "list_products.json")["data"]]
    price = call("BillingCatalogFunction", "create_price.json")
    call.ids["price_sample"] = price["id"]
    assert price["unit_amount_decimal"] == "0.04" and price["recurring"]["meter"] == meter["id"]
    tiered = call("BillingCatalogFunction", "create_tiered_price.json")
    assert tiered["product"] == product["id"] and [t["up_to"] for t in tiered["tiers"]] == [1000, None]
    assert len(call("BillingCatalogFunction", "list_prices.json")["data"]) == 2
    assert "tiers" not in call("BillingCatalogFunction", "retrieve_price.json")  # per_unit: no tiers
    assert call("BillingCatalogFunction", "update_price.json")["lookup_key"] == "tokens_monthly"

    subscription = call("BillingSubscriptionsFunction", "create_subscription.json")
    call.ids["sub_sample"] = subscription["id"]
    call.ids["si_sample"] = subscription["items"]["data"][0]["id"]
    assert call("BillingSubscriptionsFunction", "retrieve_subscription.json")["metadata"] == {"order": "42"}
    assert (
        call("BillingSubscriptionsFunction", "retrieve_subscription_item.json")["price"]["id"] == price["id"]
    )
    assert len(call("BillingSubscriptionsFunction", "list_subscriptions.json")["data"]) == 1
    assert call("BillingSubscriptionsFunction", "update_subscription.json")["cancel_at_period_end"] is True

    send(WHO, {"event_name": "ai_tokens"}, customer["id"], int(clock.now()), "1000")
    stream_pump(sample_account).settle()
    clock.shift(120)
    preview = call("BillingSubscriptionsFunction", "create_invoice_preview.json")
    assert preview["lines"]["data"][0]["quantity_decimal"] == "1000" and preview["total"] == 40
    canceled = call("BillingSubscriptionsFunction", "cancel_subscription.json")  # invoice_now=true
    assert canceled["status"] == "canceled"
    call.ids["in_sample"] = canceled["latest_invoice"]
    draft = call("BillingSubscriptionsFunction", "retrieve_invoice.json")
    assert (draft["status"], draft["total"], draft["auto_advance"]) == ("draft", 40, True)
    assert [i["id"] for i in call("BillingSubscriptionsFunction", "list_invoices.json")["data"]] == [
        draft["id"]
    ]
    assert call("BillingSubscriptionsFunction", "update_invoice.json")["automatically_finalizes_at"] is None
    assert call("BillingSubscriptionsFunction", "list_invoice_lines.json")["data"][0]["amount"] == 40
    finalized = call("BillingSubscriptionsFunction", "finalize_invoice.json")
    assert finalized["status"] == "open" and finalized["number"].endswith("-0002")
    assert call("BillingSubscriptionsFunction", "void_invoice.json")["status"] == "void"

    created = call("BillingClocksFunction", "create_test_clock.json")
    call.ids["clock_sample"] = created["id"]
    assert created["status"] == "ready" and created["frozen_time"] == 1795478400
    assert call("BillingClocksFunction", "retrieve_test_clock.json")["name"] == "monthly cycle"
    assert [c["id"] for c in call("BillingClocksFunction", "list_test_clocks.json")["data"]] == [
        created["id"]
    ]
    advanced = call("BillingClocksFunction", "advance_test_clock.json")
    assert (advanced["status"], advanced["frozen_time"]) == ("ready", 1798156800)
    assert call("BillingClocksFunction", "delete_test_clock.json")["deleted"] is True

    listed = call("BillingEventsFunction", "list_billing_events.json")["data"]
    assert [e["type"] for e in listed] == [
        "invoice.voided",
        "invoice.finalized",
        "invoice.updated",
        "invoice.created",
        "invoice.paid",  # the subscription's first invoice, created, finalized and paid at once
    ]
    call.ids["evt_sample"] = listed[0]["id"]
    event = call("BillingEventsFunction", "retrieve_billing_event.json")
    assert event["object"] == "event" and event["data"]["object"]["object"] == "invoice"

    assert handler("BillingCyclesFunction", sample_event("billing_cycles_schedule.json")) == {
        "continuations": []
    }


def test_unknown_ids_are_404(sample_account, handler):
    for function, name in [
        ("BillingCatalogFunction", "retrieve_customer.json"),
        ("BillingCatalogFunction", "retrieve_price.json"),
        ("BillingSubscriptionsFunction", "retrieve_invoice.json"),
        ("BillingClocksFunction", "retrieve_test_clock.json"),
        ("BillingEventsFunction", "retrieve_billing_event.json"),
    ]:
        result = handler(function, sample_event(name))
        assert result["statusCode"] == 404, name
        assert json.loads(result["body"])["error"]["code"] == "resource_missing"
