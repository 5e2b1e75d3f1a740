"""Period close and finalization (issue 12), in-process against moto with a shifted clock.

- a period end found through the due index becomes one draft, however often, however
  concurrently, and after whichever crash the close runs;
- the draft finalizes after the account's grace period: late usage with a timestamp in
  the period counts, usage after finalization (cancels, negatives) never changes it;
- cancel with invoice_now bills the period so far; without it, nothing;
- the scheduled function does bounded work and hands the rest to continuations.
"""

import threading
import time

import pytest

from billing import account_settings, customers, cycles, invoices, storage, subscriptions
from metering import clock
from metering.errors import StripeError
from tests.billing_fixtures import (  # noqa: F401 - billing_fixture provides the `billing` fixture
    DAY,
    HOUR,
    billing_fixture,
    cancel,
    metered_price,
    new_meter,
    principal,
    send,
)
from tests.streams import stream_pump


def run_schedule(remaining_ms: int = 600_000) -> dict:
    return cycles.handle({"source": "aws.events"}, lambda: remaining_ms)


def daily_subscription(who, formula="sum", **extra):
    meter = new_meter(who, formula)
    price = metered_price(who, meter, interval="day", unit_amount="2")
    customer = customers.create(who, {})
    sub = subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}], **extra})
    return meter, customer, sub


def invoices_of(who, sub_id, **filters):
    return invoices.list_invoices(who, {"subscription": sub_id, **filters})["data"]


def at(seconds: int) -> None:
    """Move the service's clock to `seconds` from the real now."""
    clock.shift(seconds)


def test_a_period_end_becomes_one_draft_and_the_period_rolls(billing):
    who = principal()
    meter, customer, sub = daily_subscription(who)
    start, end = (
        sub["items"]["data"][0]["current_period_start"],
        sub["items"]["data"][0]["current_period_end"],
    )
    assert end - start == DAY
    send(who, meter, customer["id"], start, "3", identifier="first")
    at(DAY - 10)
    send(who, meter, customer["id"], end - 1, "4", identifier="last-second")
    send(who, meter, customer["id"], end, "50", identifier="next-period")
    stream_pump(billing).settle()
    run_schedule()
    assert invoices_of(who, sub["id"], status="draft") == []  # not due yet
    at(DAY + 5)
    run_schedule()
    run_schedule()  # a second run for the same boundary
    (draft,) = invoices_of(who, sub["id"], status="draft")
    assert (draft["billing_reason"], draft["period_start"], draft["period_end"]) == (
        "subscription_cycle",
        start,
        end,
    )
    assert draft["auto_advance"] and draft["automatically_finalizes_at"] == draft["created"] + HOUR
    assert (
        draft["lines"]["data"][0]["quantity_decimal"] == "7"
        and draft["total"] == 14
        and draft["number"] is None
    )
    item = subscriptions.retrieve(who, sub["id"], {})["items"]["data"][0]
    assert (item["current_period_start"], item["current_period_end"]) == (end, end + DAY)
    assert subscriptions.retrieve(who, sub["id"], {})["latest_invoice"] == draft["id"]


def test_concurrent_closes_of_the_same_boundary_make_one_invoice(billing):
    who = principal()
    _, _, sub = daily_subscription(who)
    at(DAY + 5)
    now = int(clock.now())
    errors = []

    def close():
        try:
            cycles.close_period(who, sub["id"], now)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=close) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(invoices_of(who, sub["id"], status="draft")) == 1


@pytest.mark.parametrize("when", ["before_commit", "after_commit"])
def test_a_crash_anywhere_leaves_one_invoice(billing, monkeypatch, when):
    who = principal()
    _, _, sub = daily_subscription(who)
    at(DAY + 5)
    real = storage.transact
    calls = []

    def crashing(operations):
        calls.append(1)
        if len(calls) == 1:
            if when == "after_commit":
                real(operations)
            raise RuntimeError("injected crash")
        return real(operations)

    monkeypatch.setattr(storage, "transact", crashing)
    run_schedule()  # the boundary fails (logged), the entry stays due
    monkeypatch.setattr(storage, "transact", real)
    run_schedule()
    drafts = invoices_of(who, sub["id"], status="draft")
    assert len(drafts) == 1 and drafts[0]["period_end"] == sub["items"]["data"][0]["current_period_end"]


def test_finalization_after_grace_counts_late_usage_and_then_freezes(billing):
    who = principal()
    meter, customer, sub = daily_subscription(who)
    start = sub["items"]["data"][0]["current_period_start"]
    end = start + DAY
    pump = stream_pump(billing)
    at(DAY - 60)  # (cancels need events received less than 24 hours before)
    send(who, meter, customer["id"], start + 10, "5", identifier="a")
    send(who, meter, customer["id"], start + 20, "6", identifier="b")
    pump.settle()
    at(DAY + 5)
    run_schedule()
    (draft,) = invoices_of(who, sub["id"], status="draft")
    assert draft["lines"]["data"][0]["quantity_decimal"] == "11"
    # During the grace period: late usage with a timestamp in the period, a cancel, a later period's usage.
    send(who, meter, customer["id"], end - 1, "100", identifier="late")
    cancel(who, meter, "a")
    send(who, meter, customer["id"], end, "1000", identifier="next-period")
    pump.settle()
    assert (
        invoices.retrieve(who, draft["id"], {})["lines"]["data"][0]["quantity_decimal"] == "11"
    )  # a snapshot
    at(DAY + 5 + HOUR - 60)
    run_schedule()
    assert invoices.retrieve(who, draft["id"], {})["status"] == "draft"
    at(DAY + 5 + HOUR + 60)
    run_schedule()
    final = invoices.retrieve(who, draft["id"], {})
    assert final["status"] == "open" and final["number"].endswith("-0002")
    assert final["lines"]["data"][0]["quantity_decimal"] == "106" and final["amount_due"] == 212
    assert (
        final["status_transitions"]["finalized_at"] is not None
        and final["automatically_finalizes_at"] is None
    )
    # After finalization nothing changes it: not a cancel, not a negative event, not a rerun.
    cancel(who, meter, "b")
    send(who, meter, customer["id"], end - 2, "-500", identifier="negative")
    pump.settle()
    run_schedule()
    with pytest.raises(StripeError) as exc:
        invoices.finalize_api(who, draft["id"], {})
    assert exc.value.code == "invoice_not_editable"
    assert invoices.retrieve(who, draft["id"], {}) == final
    lines = invoices.list_lines(who, draft["id"], {})
    assert lines["data"] == final["lines"]["data"]


def test_a_negative_period_bills_zero_and_is_paid(billing):
    who = principal()
    meter, customer, sub = daily_subscription(who)
    start = sub["items"]["data"][0]["current_period_start"]
    send(who, meter, customer["id"], start + 1, "-7")
    stream_pump(billing).settle()
    at(DAY + 5)
    run_schedule()
    (draft,) = invoices_of(who, sub["id"], status="draft")
    final = invoices.finalize_api(who, draft["id"], {})
    assert final["lines"]["data"][0]["quantity_decimal"] == "0" and final["status"] == "paid"
    assert (
        final["amount_due"] == 0
        and final["status_transitions"]["paid_at"] == final["status_transitions"]["finalized_at"]
    )


def test_grace_period_is_an_account_setting_and_per_invoice(billing):
    who = principal()
    account_settings.set_grace_seconds(who.account_id, who.livemode, 0)
    _, _, sub = daily_subscription(who)
    at(DAY + 5)
    run_schedule()  # closes the period; grace 0 finalizes in the same run (next entry, same time)
    run_schedule()
    assert [i["status"] for i in invoices_of(who, sub["id"])] == ["paid", "paid"]  # cycle (0), then first
    with pytest.raises(ValueError):
        account_settings.set_grace_seconds(who.account_id, who.livemode, 73 * HOUR)

    account_settings.set_grace_seconds(who.account_id, who.livemode, 72 * HOUR)
    at(2 * DAY + 5)
    run_schedule()
    (draft,) = invoices_of(who, sub["id"], status="draft")
    assert draft["automatically_finalizes_at"] - draft["created"] == DAY  # capped below the next period
    later = int(clock.now()) + 3 * HOUR
    moved = invoices.update(who, draft["id"], {"automatically_finalizes_at": str(later)})
    assert moved["automatically_finalizes_at"] == later
    off = invoices.update(who, draft["id"], {"auto_advance": "false"})
    assert off["auto_advance"] is False and off["automatically_finalizes_at"] is None
    at(2 * DAY + 2 * DAY)
    run_schedule()
    assert invoices.retrieve(who, draft["id"], {})["status"] == "draft"  # no automatic finalization
    with pytest.raises(StripeError) as exc:
        invoices.update(who, invoices_of(who, sub["id"], status="paid")[0]["id"], {"auto_advance": "true"})
    assert exc.value.code == "invoice_not_editable"


def test_cancel_with_invoice_now_bills_the_period_so_far(billing):
    who = principal()
    meter, customer, sub = daily_subscription(who)
    start = sub["items"]["data"][0]["current_period_start"]
    send(who, meter, customer["id"], start + 5, "4")
    stream_pump(billing).settle()
    at(3 * HOUR)
    canceled = subscriptions.cancel(who, sub["id"], {"invoice_now": "true"})
    final = invoices.retrieve(who, canceled["latest_invoice"], {})
    assert (final["status"], final["period_start"]) == ("draft", start)
    assert 0 <= final["period_end"] - (start + 3 * HOUR) <= 5  # "now" at the cancel (the clock runs on)
    assert final["lines"]["data"][0]["quantity_decimal"] == "4"
    at(DAY + 5)
    run_schedule()
    assert len(invoices_of(who, sub["id"])) == 2  # the first invoice and the final one: no cycle invoice


def test_cancel_without_invoice_now_leaves_the_period_unbilled(billing):
    who = principal()
    meter, customer, sub = daily_subscription(who)
    send(who, meter, customer["id"], sub["start_date"] + 5, "4")
    stream_pump(billing).settle()
    subscriptions.cancel(who, sub["id"], {})
    at(DAY + 5)
    run_schedule()
    assert [i["billing_reason"] for i in invoices_of(who, sub["id"])] == ["subscription_create"]


def test_cancel_at_period_end_makes_a_last_invoice_that_waits(billing):
    who = principal()
    _, customer, sub = daily_subscription(who, cancel_at_period_end="true")
    at(DAY + 5)
    run_schedule()
    after = subscriptions.retrieve(who, sub["id"], {})
    assert (
        after["status"] == "canceled" and after["ended_at"] == sub["items"]["data"][0]["current_period_end"]
    )
    (last,) = invoices_of(who, sub["id"], status="draft")
    assert last["auto_advance"] is False and last["automatically_finalizes_at"] is None
    assert customers.load(who, customer["id"])["live_subscriptions"] == 0


def test_the_scheduled_function_hands_remaining_shards_to_continuations(billing, monkeypatch):
    who = principal()
    subs = [daily_subscription(who)[2] for _ in range(3)]
    at(DAY + 5)
    out = run_schedule(remaining_ms=1000)  # no time at all: everything is left for continuations
    assert out["continuations"] and all(len(c["shards"]) == 1 for c in out["continuations"])
    assert all(invoices_of(who, s["id"], status="draft") == [] for s in subs)
    for follow_up in out["continuations"]:
        assert cycles.handle(follow_up, lambda: 600_000) == {"continuations": []}
    assert all(len(invoices_of(who, s["id"], status="draft")) == 1 for s in subs)


def test_events_are_stored_and_put_on_the_bus(billing, monkeypatch):
    import json
    from types import SimpleNamespace

    from billing import events

    sent = []

    class Bus:
        def put_events(self, Entries):  # noqa: N803 - boto3's parameter name
            sent.extend(Entries)
            return {"FailedEntryCount": 0}

    from metering import snapshot_events

    monkeypatch.setattr(snapshot_events, "aws", SimpleNamespace(events=Bus))
    who = principal()
    _, customer, sub = daily_subscription(who)
    at(DAY + 5)
    run_schedule()
    (draft,) = invoices_of(who, sub["id"], status="draft")
    stored = events.list_events(who, {"type": "invoice.created", "limit": "1"})["data"][0]
    assert stored["object"] == "event" and stored["api_version"] == snapshot_events.API_VERSION
    assert stored["data"]["object"]["id"] == draft["id"] and stored["request"] == {
        "id": None,
        "idempotency_key": None,
    }
    assert events.retrieve(who, stored["id"], {}) == stored
    on_bus = [json.loads(e["Detail"]) for e in sent if e["DetailType"] == "invoice.created"]
    assert stored["id"] in [d["event"]["id"] for d in on_bus]
    assert all(e["Source"] == snapshot_events.SOURCE for e in sent)
    updated = events.list_events(who, {"type": "customer.subscription.updated"})["data"][0]
    assert "items" in updated["data"]["previous_attributes"]  # the period moved on
    assert {
        e["type"] for e in events.list_events(who, {"types": ["customer.*"], "limit": "100"})["data"]
    } == {
        "customer.created",
        "customer.subscription.created",
        "customer.subscription.updated",
    }
    assert customer["object"] == "customer"


def test_a_long_period_keeps_its_first_minute_after_the_ledger_expires(billing):
    """A yearly period starting mid-minute: 37 days in, the first partial minute is kept, so
    the invoice stays exact after the rollup ledger of that minute expired (75 days)."""
    import boto3

    from billing import edges
    from metering.rollups import GRANULARITY, floor, ledger_pk

    who = principal()
    meter = new_meter(who)
    price = metered_price(who, meter, interval="year", unit_amount="1")
    customer = customers.create(who, {})
    now = int(clock.now())
    start = now - 7 if (now - 7) % 60 else now - 8
    sub = subscriptions.create(
        who,
        {"customer": customer["id"], "items": [{"price": price["id"]}], "backdate_start_date": str(start)},
    )
    at(300)
    send(who, meter, customer["id"], start, "3")  # in the first partial minute
    send(who, meter, customer["id"], edges.minute_end(start) - 1, "4")  # its last second
    send(who, meter, customer["id"], edges.minute_end(start) + 30, "5")
    stream_pump(billing).settle()
    assert invoices.preview(who, {"subscription": sub["id"]})["lines"]["data"][0]["quantity_decimal"] == "12"
    at(36 * DAY)
    run_schedule()
    assert storage.get(who.scope, edges.sk(sub["id"], start)).get("taken") is None  # not yet: 37 days
    at(37 * DAY + HOUR)
    run_schedule()
    taken = storage.get(who.scope, edges.sk(sub["id"], start))["taken"]
    assert taken[sub["items"]["data"][0]["id"]]["sum"] == "7"
    # The ledger of that day expires (TTL); the buckets stay. (A sum meter keeps no ledger:
    # its minute buckets hold per-second sums; `last` meters keep one.)
    ledger = ledger_pk(who.scope, meter["id"], customer["id"], floor(start, GRANULARITY["D"]))
    dynamodb = boto3.client("dynamodb")
    table = billing.tables["RollupsTable"]
    found = dynamodb.query(
        TableName=table, KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": {"S": ledger}}
    )["Items"]
    assert found or meter["formula"] != "last"
    for item in found:
        dynamodb.delete_item(TableName=table, Key={"pk": item["pk"], "sk": item["sk"]})
    assert invoices.preview(who, {"subscription": sub["id"]})["lines"]["data"][0]["quantity_decimal"] == "12"
    end = sub["items"]["data"][0]["current_period_end"]
    clock.shift(end + 5 - time.time())  # the year is over: the draft, then the finalized invoice
    run_schedule()
    (draft,) = invoices_of(who, sub["id"], status="draft")
    assert draft["lines"]["data"][0]["quantity_decimal"] == "12"
    clock.shift(end + 5 + HOUR + 60 - time.time())
    run_schedule()
    final = invoices.retrieve(who, draft["id"], {})
    assert final["status"] == "open" and final["lines"]["data"][0]["quantity_decimal"] == "12"
