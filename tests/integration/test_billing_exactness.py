"""Invoice quantities against an oracle over random histories (hypothesis).

The preview of a subscription whose period starts at a random second, with one metered
item per formula (sum, count, last; raw and pre-aggregated), after random events
(clustered around the period start, negatives included) and cancellations: every line's
`quantity_decimal` is max(0, the oracle over [period start, now)) and its amount the
price's amount for it. And for a whole cycle: the preview before the period end, the
draft the close makes (run twice: one invoice), the invoice finalized after the grace
period (late usage in the period counted, cancels applied) and the same invoice after
more cancels and negative events: each equals the oracle at its time, and the finalized
invoice never changes.
"""

import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing import amounts, customers, invoices, prices, subscriptions
from metering import clock
from metering.errors import StripeError
from tests.billing_fixtures import (  # noqa: F401 - billing_fixture provides the `billing` fixture
    DAY,
    as_decimal,
    billing_fixture,
    cancel,
    counted_events,
    expected,
    metered_price,
    new_meter,
    principal,
    send,
)
from tests.streams import stream_pump

METERS = [("sum", None), ("count", None), ("last", None), ("sum", "hour"), ("last", "day")]


@st.composite
def histories(draw):
    start_ago = draw(st.integers(60, 2 * DAY))  # the period started this long before now
    near = st.builds(lambda d: start_ago + d, st.integers(-120, 120))
    ago = st.one_of(near, near, st.integers(1, 3 * DAY))  # seconds before now
    value = st.decimals(min_value=-30, max_value=60, places=2, allow_nan=False, allow_infinity=False)
    send_step = st.tuples(st.just("send"), st.integers(0, len(METERS) - 1), ago, value, st.integers(0, 25))
    cancel_step = st.tuples(st.just("cancel"), st.integers(0, len(METERS) - 1), st.integers(0, 25))
    steps = draw(st.lists(st.one_of(send_step, send_step, cancel_step), max_size=25))
    return start_ago, steps


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_preview_lines_equal_the_oracle(billing, history):
    start_ago, steps = history
    who = principal()
    meters = [new_meter(who, formula, window) for formula, window in METERS]
    price_list = [metered_price(who, m, unit_amount_decimal="1.25") for m in meters]
    customer = customers.create(who, {})
    now = int(clock.now())
    sub = subscriptions.create(
        who,
        {
            "customer": customer["id"],
            "items": [{"price": p["id"]} for p in price_list],
            "backdate_start_date": str(now - start_ago),
        },
    )
    for step in steps:
        try:
            if step[0] == "send":
                _, index, ago, value, ident = step
                send(who, meters[index], customer["id"], now - ago, value, identifier=f"id{ident}")
            else:
                cancel(who, meters[step[1]], f"id{step[2]}")
        except StripeError as exc:
            assert exc.code == "duplicate_identifier" or exc.param in ("cancel[identifier]", "event_name")
    stream_pump(billing).settle()
    preview = invoices.preview(who, {"customer": customer["id"]})
    truth = counted_events(billing, who.scope)
    start, at = now - start_ago, preview["created"]
    assert preview["period_start"] == start == sub["start_date"] and at >= now
    for (formula, _), meter, price, line in zip(
        METERS, meters, price_list, preview["lines"]["data"], strict=True
    ):
        want = amounts.line_quantity(
            expected(formula, truth.get((meter["id"], customer["id"]), []), start, at)
        )
        assert as_decimal(line["quantity_decimal"]) == want, formula
        assert line["quantity"] == int(want)
        pricing = prices.pricing_of(prices.load(who, price["id"]))
        assert line["amount"] == amounts.line_amount(pricing, want)
    assert preview["total"] == sum(line["amount"] for line in preview["lines"]["data"])


PHASES = ("open period", "grace", "finalized")


@st.composite
def cycle_histories(draw):
    """A first period of random length, and steps in three phases: before its end, during the
    grace period, after finalization; event timestamps cluster around the period end."""
    length = draw(st.integers(120, DAY))
    near_end = st.builds(lambda d: length + d, st.integers(-90, 90))
    offset = st.one_of(near_end, near_end, st.integers(0, length + 60))  # seconds after the period start
    value = st.decimals(min_value=-30, max_value=60, places=2, allow_nan=False, allow_infinity=False)
    send_step = st.tuples(st.just("send"), st.integers(0, len(METERS) - 1), offset, value, st.integers(0, 25))
    cancel_step = st.tuples(st.just("cancel"), st.integers(0, len(METERS) - 1), st.integers(0, 25))
    step = st.one_of(send_step, send_step, cancel_step)
    return length, [draw(st.lists(step, max_size=12)) for _ in PHASES]


def _apply(who, meters, customer, start, steps, ceiling):
    for step in steps:
        try:
            if step[0] == "send":
                _, index, offset, value, ident = step
                ts = min(start + offset, ceiling)  # never more than 5 minutes ahead of the clock
                send(who, meters[index], customer, ts, value, identifier=f"id{ident}")
            else:
                cancel(who, meters[step[1]], f"id{step[2]}")
        except StripeError as exc:
            assert exc.code == "duplicate_identifier" or exc.param in ("cancel[identifier]", "event_name")


def _check(who, billing, meters, customer, invoice, start, end):
    truth = counted_events(billing, who.scope)
    for (formula, _), meter, line in zip(METERS, meters, invoice["lines"]["data"], strict=True):
        want = amounts.line_quantity(expected(formula, truth.get((meter["id"], customer), []), start, end))
        assert as_decimal(line["quantity_decimal"]) == want, (formula, invoice["status"])
        assert line["amount"] == amounts.line_amount(
            amounts.Pricing("per_unit", unit=as_decimal("1.25")), want
        )


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=cycle_histories())
def test_preview_draft_and_finalized_invoice_equal_the_oracle(billing, history):
    from billing import cycles

    length, phases = history
    who = principal()
    meters = [new_meter(who, formula, window) for formula, window in METERS]
    price_list = [metered_price(who, m, interval="day", unit_amount_decimal="1.25") for m in meters]
    customer = customers.create(who, {})["id"]
    now = int(clock.now())
    sub = subscriptions.create(
        who,
        {
            "customer": customer,
            "items": [{"price": p["id"]} for p in price_list],
            "billing_cycle_anchor": str(now + length),
        },
    )
    start, end = sub["items"]["data"][0]["current_period_start"], now + length
    assert sub["items"]["data"][0]["current_period_end"] == end
    pump = stream_pump(billing)

    def move_to(t: int) -> None:
        clock.shift(t - time.time())

    move_to(end - 30)
    _apply(who, meters, customer, start, phases[0], end - 30 + 300)
    pump.settle()
    preview = invoices.preview(who, {"subscription": sub["id"]})
    _check(who, billing, meters, customer, preview, start, preview["created"])

    move_to(end + 10)
    for _ in range(2):  # the close runs twice: one invoice
        cycles.handle({}, lambda: 600_000)
    (draft,) = invoices.list_invoices(who, {"subscription": sub["id"], "status": "draft"})["data"]
    assert (draft["period_start"], draft["period_end"]) == (start, end)
    _check(who, billing, meters, customer, draft, start, end)

    _apply(who, meters, customer, start, phases[1], end + 10 + 300)  # late usage, cancels, next period
    pump.settle()
    move_to(int(draft["automatically_finalizes_at"]) + 5)
    cycles.handle({}, lambda: 600_000)
    final = invoices.retrieve(who, draft["id"], {})
    assert final["status"] in ("open", "paid")
    _check(who, billing, meters, customer, final, start, end)

    _apply(who, meters, customer, start, phases[2], int(clock.now()) + 300)  # after finalization
    pump.settle()
    cycles.handle({}, lambda: 600_000)
    assert invoices.retrieve(who, draft["id"], {}) == final  # frozen
