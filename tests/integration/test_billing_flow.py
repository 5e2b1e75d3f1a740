"""Customers, products, prices, subscriptions and the invoice preview, in-process against moto."""

import pytest

from billing import customers, invoices, prices, products, subscriptions
from metering import clock
from metering.errors import StripeError
from tests.billing_fixtures import (  # noqa: F401 - billing_fixture provides the `billing` fixture
    DAY,
    billing_fixture,
    metered_price,
    new_meter,
    principal,
    send,
)
from tests.streams import stream_pump


def test_customer_lifecycle_and_list_filters(billing):
    who = principal()
    a = customers.create(who, {"email": "a@example.com", "name": "A", "metadata": {"plan": "pro"}})
    b = customers.create(who, {"email": "b@example.com"})
    assert a["object"] == "customer" and a["id"].startswith("cus_") and a["balance"] == 0
    assert a["metadata"] == {"plan": "pro"} and a["test_clock"] is None and a["livemode"] is False
    listed = customers.list_customers(who, {})
    assert [c["id"] for c in listed["data"]] == [b["id"], a["id"]]  # newest first
    assert [c["id"] for c in customers.list_customers(who, {"email": "a@example.com"})["data"]] == [a["id"]]
    assert customers.list_customers(who, {"created": {"gt": str(a["created"] + 10**6)}})["data"] == []
    page = customers.list_customers(who, {"limit": "1"})
    assert page["has_more"] and page["data"][0]["id"] == b["id"]
    after = customers.list_customers(who, {"limit": "1", "starting_after": b["id"]})
    assert [c["id"] for c in after["data"]] == [a["id"]] and not after["has_more"]

    updated = customers.update(who, a["id"], {"name": "A2", "metadata": {"plan": "", "tier": "1"}})
    assert updated["name"] == "A2" and updated["metadata"] == {"tier": "1"}
    assert customers.delete(who, a["id"], {}) == {"id": a["id"], "object": "customer", "deleted": True}
    assert customers.retrieve(who, a["id"], {}) == {"id": a["id"], "object": "customer", "deleted": True}
    assert [c["id"] for c in customers.list_customers(who, {})["data"]] == [b["id"]]


def test_tenancy_other_accounts_and_modes_see_nothing(billing):
    who = principal()
    customer = customers.create(who, {"email": "x@example.com"})
    for other in (principal(), type(who)(who.account_id, True)):
        with pytest.raises(StripeError) as exc:
            customers.retrieve(other, customer["id"], {})
        assert exc.value.status == 404 and exc.value.code == "resource_missing"
        assert customers.list_customers(other, {})["data"] == []


@pytest.mark.parametrize(
    "params, param",
    [
        ({"bogus": "1"}, "bogus"),
        ({"metadata": {"k" * 41: "v"}}, f"metadata[{'k' * 41}]"),
        ({"metadata": {"k": "v" * 501}}, "metadata[k]"),
        ({"metadata": {f"k{i}": "v" for i in range(51)}}, "metadata"),
        ({"email": "e" * 513}, "email"),
        ({"test_clock": "clock_missing"}, "test_clock"),
    ],
)
def test_customer_params_are_checked(billing, params, param):
    with pytest.raises(StripeError) as exc:
        customers.create(principal(), params)
    assert exc.value.param == param


def test_products_with_chosen_ids_and_prices(billing):
    who = principal()
    meter = new_meter(who)
    product = products.create(who, {"name": "Tokens", "id": "tok#/ü"})
    assert products.retrieve(who, "tok#/ü", {})["name"] == "Tokens"
    with pytest.raises(StripeError) as exc:
        products.create(who, {"name": "Again", "id": "tok#/ü"})
    assert exc.value.param == "id"
    price = prices.create(
        who,
        {
            "currency": "USD",
            "product": product["id"],
            "recurring": {"interval": "month", "usage_type": "metered", "meter": meter["id"]},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [{"up_to": "1000", "unit_amount": "0"}, {"up_to": "inf", "unit_amount_decimal": "0.25"}],
            "lookup_key": "tokens_monthly",
        },
    )
    assert price["currency"] == "usd" and price["unit_amount"] is None and "tiers" not in price
    assert price["recurring"]["meter"] == meter["id"] and price["type"] == "recurring"
    expanded = prices.retrieve(who, price["id"], {"expand": ["tiers"]})
    assert expanded["tiers"] == [
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": 0,
            "unit_amount_decimal": "0",
            "up_to": 1000,
        },
        {
            "flat_amount": None,
            "flat_amount_decimal": None,
            "unit_amount": None,
            "unit_amount_decimal": "0.25",
            "up_to": None,
        },
    ]
    assert [p["id"] for p in prices.list_prices(who, {"lookup_keys": ["tokens_monthly"]})["data"]] == [
        price["id"]
    ]
    with pytest.raises(StripeError) as exc:
        metered_price(who, meter, lookup_key="tokens_monthly", unit_amount="1")
    assert exc.value.param == "lookup_key"
    moved = prices.update(who, price["id"], {"lookup_key": "", "nickname": "n", "active": "false"})
    assert moved["lookup_key"] is None and moved["nickname"] == "n" and moved["active"] is False
    assert (
        metered_price(who, meter, lookup_key="tokens_monthly", unit_amount="1")["lookup_key"]
        == "tokens_monthly"
    )
    with pytest.raises(StripeError) as exc:
        prices.update(who, price["id"], {"unit_amount": "5"})
    assert exc.value.code == "parameter_unknown" and exc.value.param == "unit_amount"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"recurring": {"interval": "month", "usage_type": "metered"}}, "recurring[meter]"),
        (
            {"recurring": {"interval": "month", "usage_type": "metered", "meter": "mtr_nope"}},
            "recurring[meter]",
        ),
        ({"unit_amount_decimal": "0.1234567890123"}, "unit_amount_decimal"),
        ({"unit_amount": "1", "unit_amount_decimal": "1"}, "unit_amount_decimal"),
        (
            {
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [{"up_to": "5", "unit_amount": "1"}],
            },
            "tiers[0][up_to]",
        ),
        (
            {
                "billing_scheme": "tiered",
                "tiers_mode": "volume",
                "tiers": [
                    {"up_to": "5", "unit_amount": "1"},
                    {"up_to": "inf", "flat_amount": "1", "flat_amount_decimal": "1"},
                ],
            },
            "tiers[1][flat_amount_decimal]",
        ),
        (
            {
                "billing_scheme": "tiered",
                "tiers_mode": "graduated",
                "tiers": [{"up_to": "inf", "unit_amount": "1"}],
                "transform_quantity": {"divide_by": "60", "round": "up"},
            },
            "transform_quantity",
        ),
    ],
)
def test_price_params_are_checked(billing, extra, param):
    who = principal()
    params = {"currency": "usd", "product_data": {"name": "P"}, **extra}
    if "unit_amount" not in extra and "unit_amount_decimal" not in extra and "tiers" not in extra:
        params["unit_amount"] = "1"
    with pytest.raises(StripeError) as exc:
        prices.create(who, params)
    assert exc.value.param == param


def test_a_metered_price_needs_an_active_meter_of_the_same_account_and_mode(billing):
    from metering import meters

    who = principal()
    meter = new_meter(who)
    for other in (principal(), type(who)(who.account_id, True)):  # another account, the other mode
        with pytest.raises(StripeError) as exc:
            metered_price(other, meter)
        assert exc.value.param == "recurring[meter]"
    meters.set_status(who, meter["id"], {}, active=False)
    with pytest.raises(StripeError) as exc:
        metered_price(who, meter)
    assert exc.value.param == "recurring[meter]" and "deactivated" in exc.value.message


def test_subscription_periods_live_on_items_and_the_first_invoice_is_paid(billing):
    who = principal()
    meter = new_meter(who)
    price = metered_price(who, meter)
    customer = customers.create(who, {"email": "c@example.com"})
    sub = subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    assert sub["status"] == "active" and "current_period_start" not in sub
    (item,) = sub["items"]["data"]
    assert item["current_period_start"] == sub["start_date"] == sub["billing_cycle_anchor"]
    assert item["current_period_end"] > item["current_period_start"] and item["price"]["id"] == price["id"]
    assert subscriptions.retrieve_item(who, item["id"], {})["subscription"] == sub["id"]
    first = invoices.retrieve(who, sub["latest_invoice"], {})
    assert subscriptions.retrieve(who, sub["id"], {"expand": ["latest_invoice"]})["latest_invoice"] == first
    assert (first["billing_reason"], first["status"], first["amount_due"]) == (
        "subscription_create",
        "paid",
        0,
    )
    assert (
        first["number"].endswith("-0001")
        and first["parent"]["subscription_details"]["subscription"] == sub["id"]
    )
    assert customers.retrieve(who, customer["id"], {})["next_invoice_sequence"] == 2
    listed = subscriptions.list_subscriptions(who, {"customer": customer["id"]})["data"]
    assert [s["id"] for s in listed] == [sub["id"]]
    assert [s["id"] for s in subscriptions.list_subscriptions(who, {"price": price["id"]})["data"]] == [
        sub["id"]
    ]

    updated = subscriptions.update(who, sub["id"], {"cancel_at_period_end": "true", "metadata": {"a": "b"}})
    assert updated["cancel_at_period_end"] and updated["cancel_at"] == item["current_period_end"]
    canceled = subscriptions.cancel(who, sub["id"], {})
    assert canceled["status"] == "canceled" and canceled["ended_at"] is not None
    assert subscriptions.list_subscriptions(who, {"customer": customer["id"]})["data"] == []
    assert (
        len(subscriptions.list_subscriptions(who, {"customer": customer["id"], "status": "all"})["data"]) == 1
    )
    with pytest.raises(StripeError) as exc:
        invoices.preview(who, {"subscription": sub["id"]})
    assert (exc.value.status, exc.value.code) == (404, "invoice_upcoming_none")


@pytest.mark.parametrize("day", [29, 30, 31])
def test_monthly_anchors_late_in_the_month_clamp_to_the_last_day(billing, day):
    import datetime

    from billing import periods

    anchor = int(datetime.datetime(2027, 1, day, 12, tzinfo=datetime.UTC).timestamp())
    ends = [periods.boundary(anchor, "month", 1, k) for k in range(1, 4)]
    days = [datetime.datetime.fromtimestamp(t, datetime.UTC).day for t in ends]
    assert days == [28, min(day, 31), min(day, 30)]


def test_preview_bills_the_period_so_far(billing):
    who = principal()
    meter = new_meter(who)
    price = metered_price(who, meter, unit_amount_decimal="0.5")
    customer = customers.create(who, {})
    now = int(clock.now())
    start = now - 2 * DAY
    sub = subscriptions.create(
        who,
        {"customer": customer["id"], "items": [{"price": price["id"]}], "backdate_start_date": str(start)},
    )
    pump = stream_pump(billing)
    send(who, meter, customer["id"], start - 1, "1000")  # before the period
    send(who, meter, customer["id"], start, "3")
    send(who, meter, customer["id"], start + 61, "4.25")
    send(who, meter, customer["id"], now - 1, "2")
    pump.settle()
    preview = invoices.preview(who, {"customer": customer["id"]})
    assert preview["id"].startswith("upcoming_in_") and preview["billing_reason"] == "upcoming"
    assert preview["status"] == "draft" and preview["period_start"] == start
    (line,) = preview["lines"]["data"]
    assert line["quantity_decimal"] == "9.25" and line["quantity"] == 9
    assert line["amount"] == 5  # 4.625 rounds half up once per line
    assert preview["subtotal"] == preview["total"] == preview["amount_due"] == 5
    assert invoices.preview(who, {"subscription": sub["id"]})["total"] == 5

    send(who, meter, customer["id"], now - 2, "-100")
    pump.settle()
    line = invoices.preview(who, {"subscription": sub["id"]})["lines"]["data"][0]
    assert (line["quantity_decimal"], line["amount"]) == ("0", 0)  # a negative total bills 0


def test_preview_needs_one_live_subscription(billing):
    who = principal()
    price = metered_price(who, new_meter(who))
    customer = customers.create(who, {})
    with pytest.raises(StripeError) as exc:
        invoices.preview(who, {"customer": customer["id"]})
    assert exc.value.code == "invoice_upcoming_none" and exc.value.status == 404
    for _ in range(2):
        subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    with pytest.raises(StripeError) as exc:
        invoices.preview(who, {"customer": customer["id"]})
    assert exc.value.param == "subscription"


def test_deleting_a_customer_cancels_its_subscriptions(billing):
    who = principal()
    price = metered_price(who, new_meter(who))
    customer = customers.create(who, {})
    sub = subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    customers.delete(who, customer["id"], {})
    assert subscriptions.retrieve(who, sub["id"], {})["status"] == "canceled"
    with pytest.raises(StripeError) as exc:
        subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
    assert exc.value.status == 404 and exc.value.param == "customer"


def test_subscription_item_rules(billing):
    who = principal()
    meter = new_meter(who)
    monthly, weekly = metered_price(who, meter), metered_price(who, meter, interval="week")
    customer = customers.create(who, {})
    cases = [
        ({"items": [{"price": monthly["id"]}, {"price": weekly["id"]}]}, "items[1][price]"),
        ({"items": [{"price": monthly["id"]}, {"price": monthly["id"]}]}, "items[1][price]"),
        ({"items": [{"price": monthly["id"], "quantity": "2"}]}, "items[0][quantity]"),
        ({"items": [{"price": "price_missing"}]}, "items[0][price]"),
        ({"items": [{"price": monthly["id"]}] * 21}, "items"),
        ({"items": [{"price": monthly["id"]}], "billing_cycle_anchor": "1"}, "billing_cycle_anchor"),
    ]
    for extra, param in cases:
        with pytest.raises(StripeError) as exc:
            subscriptions.create(who, {"customer": customer["id"], **extra})
        assert exc.value.param == param, extra


@pytest.mark.parametrize("param", ["starting_after", "ending_before"])
def test_list_cursors_must_name_the_callers_objects(billing, param):
    from billing import test_clocks as clock_objects
    from metering.accounts import Principal

    customer_objects, invoice_objects, price_objects = customers, invoices, prices
    subscription_objects = subscriptions

    who = principal()
    mine = customer_objects.create(who, {"email": "a@example.com"})
    assert customer_objects.list_customers(who, {param: mine["id"]})["object"] == "list"
    other_mode = Principal(who.account_id, True)
    for lister, cursor in [
        (customer_objects.list_customers, mine["id"]),  # another mode's object
        (customer_objects.list_customers, "cus_unknown"),
        (subscription_objects.list_subscriptions, "sub_unknown"),
        (invoice_objects.list_invoices, "in_unknown"),
        (price_objects.list_prices, "price_unknown"),
        (clock_objects.list_clocks, "clock_unknown"),
    ]:
        caller = other_mode if cursor == mine["id"] else who
        with pytest.raises(StripeError) as exc:
            lister(caller, {param: cursor})
        assert (exc.value.status, exc.value.code, exc.value.param) == (404, "resource_missing", param)
