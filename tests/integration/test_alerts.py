"""Billing alerts: the API, and their firing in the aggregation path, against moto."""

import boto3
import pytest

from metering import (
    adjustments,
    aggregate,
    alert_counters,
    alerts,
    ingest,
    meters,
    notifications,
    snapshot_events,
)
from metering.accounts import Principal
from metering.errors import StripeError
from tests.streams import stream_pump

A = Principal("acct_alerts", False)
B = Principal("acct_other", False)


def meter(who=A, formula="sum", event_name="tokens", **spec):
    params = {"display_name": "m", "event_name": event_name, "default_aggregation": {"formula": formula}}
    return meters.create(who, {**params, **spec})


def alert_params(meter_id: str, gte, customer: str | None = None, title: str = "Usage alert") -> dict:
    threshold = {"gte": str(gte), "meter": meter_id, "recurrence": "one_time"}
    if customer is not None:
        threshold["filters"] = [{"type": "customer", "customer": customer}]
    return {"alert_type": "usage_threshold", "title": title, "usage_threshold": threshold}


def new_alert(meter_id: str, gte, customer: str | None = None, who=A) -> dict:
    return alerts.create(who, alert_params(meter_id, gte, customer))


def send(value, customer="cus_1", identifier=None, event_name="tokens", who=A):
    params = {"event_name": event_name, "payload": {"stripe_customer_id": customer, "value": str(value)}}
    if identifier:
        params["identifier"] = identifier
    return ingest.create_v1(who, params)


def fired(who=A) -> list[dict]:
    """The stored billing.alert.triggered events, oldest first."""
    items, _ = snapshot_events.page(who.scope, 100, keep=lambda i: i["type"] == "billing.alert.triggered")
    return [snapshot_events.load(i)["data"]["object"] for i in reversed(items)]


def test_alert_object_and_lifecycle(aws):
    m = meter()
    created = new_alert(m["id"], 100, "cus_1")
    assert created["id"].startswith("alrt_")
    assert created == {
        "id": created["id"],
        "object": "billing.alert",
        "alert_type": "usage_threshold",
        "livemode": False,
        "status": "active",
        "title": "Usage alert",
        "usage_threshold": {
            "filters": [{"customer": "cus_1", "type": "customer"}],
            "gte": 100,
            "meter": m["id"],
            "recurrence": "one_time",
        },
    }
    unfiltered = new_alert(m["id"], 5)
    assert unfiltered["usage_threshold"]["filters"] is None
    assert alerts.retrieve(A, created["id"], {}) == created
    assert alerts.change(A, created["id"], {}, "deactivate")["status"] == "inactive"
    assert alerts.change(A, created["id"], {}, "deactivate")["status"] == "inactive"
    assert alerts.change(A, created["id"], {}, "activate")["status"] == "active"
    listed = alerts.list_alerts(A, {})
    assert [a["id"] for a in listed["data"]] == [unfiltered["id"], created["id"]]
    assert alerts.change(A, created["id"], {}, "archive")["status"] == "archived"
    assert alerts.change(A, created["id"], {}, "archive")["status"] == "archived"
    assert alerts.retrieve(A, created["id"], {})["status"] == "archived"  # still retrievable
    assert [a["id"] for a in alerts.list_alerts(A, {})["data"]] == [unfiltered["id"]]  # not listed
    for action in ("activate", "deactivate"):
        with pytest.raises(StripeError) as exc:
            alerts.change(A, created["id"], {}, action)
        assert exc.value.status == 400
    other = meter(event_name="other")
    new_alert(other["id"], 1)
    assert len(alerts.list_alerts(A, {})["data"]) == 2
    assert [a["usage_threshold"]["meter"] for a in alerts.list_alerts(A, {"meter": other["id"]})["data"]] == [
        other["id"]
    ]
    assert alerts.list_alerts(A, {"alert_type": "usage_threshold", "limit": "1"})["has_more"] is True
    with pytest.raises(StripeError) as exc:
        alerts.retrieve(B, created["id"], {})  # another account's alert is 404
    assert exc.value.status == 404


@pytest.mark.parametrize(
    "change, param",
    [
        ({"title": "x" * 257}, "title"),
        ({"title": ""}, "title"),
        ({"alert_type": "spend"}, "alert_type"),
        ({"usage_threshold": {"gte": "0", "recurrence": "one_time"}}, "usage_threshold[gte]"),
        ({"usage_threshold": {"gte": "1.5", "recurrence": "one_time"}}, "usage_threshold[gte]"),
        ({"usage_threshold": {"gte": "5", "recurrence": "always"}}, "usage_threshold[recurrence]"),
        (
            {"usage_threshold": {"gte": "5", "recurrence": "one_time", "meter": "mtr_nope"}},
            "usage_threshold[meter]",
        ),
        ({"usage_threshold": {"gte": "5", "recurrence": "one_time", "filters": [{"type": "tier"}]}}, None),
        ({"color": "red"}, "color"),
    ],
)
def test_invalid_alerts_are_refused_naming_the_param(aws, change, param):
    m = meter()
    params = alert_params(m["id"], 10)
    for name, value in change.items():
        if name == "usage_threshold":
            params[name] = {**params[name], **value}
        else:
            params[name] = value
    with pytest.raises(StripeError) as exc:
        alerts.create(A, params)
    assert exc.value.status in (400, 404)
    if param is not None:
        assert exc.value.param == param
    else:
        assert exc.value.param.startswith("usage_threshold[filters][0]")


def test_alerts_on_last_meters_and_more_than_25_per_filter_are_refused(aws):
    last = meter(formula="last", event_name="gauge")
    with pytest.raises(StripeError) as exc:
        new_alert(last["id"], 5)
    assert exc.value.param == "usage_threshold[meter]"
    m = meter()
    made = [new_alert(m["id"], n + 1, "cus_1") for n in range(25)]
    with pytest.raises(StripeError) as exc:
        new_alert(m["id"], 99, "cus_1")
    assert exc.value.status == 400
    new_alert(m["id"], 99, "cus_2")  # another customer filter has its own 25
    new_alert(m["id"], 99)  # and so has "no filter"
    alerts.change(A, made[0]["id"], {}, "archive")
    new_alert(m["id"], 99, "cus_1")  # archiving frees a place


def test_an_alert_fires_once_per_customer_on_usage_received_after_it(aws):
    m = meter()
    pump = stream_pump(aws)
    send(50, "cus_1")  # before the alert: never counts towards it
    pump.settle()
    a = new_alert(m["id"], 10)
    send(6, "cus_1")
    send(3, "cus_2")
    pump.settle()
    assert fired() == []
    send(5, "cus_1")
    pump.settle()
    (first,) = fired()
    assert first["object"] == "billing.alert_triggered"
    assert first["alert"] == alerts.retrieve(A, a["id"], {})
    assert first["customer"] == "cus_1" and first["value"] == 11 and first["livemode"] is False
    send(100, "cus_1")
    send(7, "cus_2")
    pump.settle()
    assert [(f["customer"], f["value"]) for f in fired()] == [("cus_1", 11), ("cus_2", 10)]
    event = snapshot_events.page(A.scope, 1)[0][0]
    assert snapshot_events.load(event)["type"] == "billing.alert.triggered"
    thin = [
        e
        for e in notifications.list_events(A.scope, 100, None)[0]
        if e["type"] == "v1.billing.alert.triggered"
    ]
    assert len(thin) == 2 and thin[0]["related_object"]["id"] == a["id"]
    assert thin[0]["related_object"]["url"] == f"/v1/billing/alerts/{a['id']}"


def test_a_customer_filter_count_meter_and_cancel(aws):
    m = meter(formula="count")
    pump = stream_pump(aws)
    new_alert(m["id"], 3, "cus_1")
    send(100, "cus_2")
    send(100, "cus_2")
    send(100, "cus_2")  # three events, another customer
    send(1, "cus_1", identifier="a")
    send(1, "cus_1", identifier="b")
    pump.settle()
    adjustments.create_v1(A, {"event_name": "tokens", "cancel": {"identifier": "b"}})
    send(1, "cus_1", identifier="c")
    pump.settle()
    assert fired() == []  # 1 + 1 - 1 + 1 = 2 events counted for cus_1
    send(-5, "cus_1", identifier="d")  # a count meter counts events, whatever their value
    pump.settle()
    assert [(f["customer"], f["value"]) for f in fired()] == [("cus_1", 3)]


def test_negative_usage_and_deactivation(aws):
    m = meter()
    pump = stream_pump(aws)
    a = new_alert(m["id"], 10)
    send(8)
    send(-4)
    send(5)  # 9
    pump.settle()
    alerts.change(A, a["id"], {}, "deactivate")
    send(20)  # counted while inactive, but an inactive alert does not fire
    pump.settle()
    assert fired() == []
    alerts.change(A, a["id"], {}, "activate")
    assert fired() == []  # activating does not evaluate at once...
    send(0)
    pump.settle()
    assert [f["value"] for f in fired()] == [29]  # ...the customer's next usage does


def test_activate_rearms_an_alert_that_fired(aws):
    m = meter()
    pump = stream_pump(aws)
    a = new_alert(m["id"], 10)
    send(12)
    pump.settle()
    send(1)
    pump.settle()
    assert [f["value"] for f in fired()] == [12]
    alerts.change(A, a["id"], {}, "activate")
    send(1)
    send(1)
    pump.settle()
    assert [f["value"] for f in fired()] == [12, 14]  # once more after activate, with both events applied
    send(1)
    pump.settle()
    assert len(fired()) == 2


def test_archived_alerts_stop_counting_and_firing(aws):
    m = meter()
    pump = stream_pump(aws)
    a = new_alert(m["id"], 10)
    send(3)
    pump.settle()
    alerts.change(A, a["id"], {}, "archive")
    send(30)
    pump.settle()
    assert fired() == []
    item = boto3.client("dynamodb").get_item(
        TableName=aws.tables["EventsTable"],
        Key={"pk": {"S": f"A#{A.scope}#ID#late"}, "sk": {"S": "EV"}},
    )
    assert "Item" not in item
    send(1, identifier="late")  # no alert left on the meter: the event carries no flag
    stored = boto3.client("dynamodb").get_item(
        TableName=aws.tables["EventsTable"], Key={"pk": {"S": f"A#{A.scope}#ID#late"}, "sk": {"S": "EV"}}
    )["Item"]
    assert "al" not in stored


def test_records_of_meters_without_alerts_read_no_alerts(aws, monkeypatch):
    m = meter()
    other = meter(event_name="watched")
    new_alert(other["id"], 1)
    reads = []
    real = alert_counters.store.query
    monkeypatch.setattr(alert_counters.store, "query", lambda *a, **k: reads.append(a) or real(*a, **k))
    pump = stream_pump(aws)
    for n in range(5):
        send(n)
    pump.settle()
    assert reads == []  # unflagged records: no alert read at all
    send(1, event_name="watched")
    pump.settle()
    alert_reads = [r for r in reads if r[2].startswith("ALERTON#")]
    assert len(alert_reads) == 1  # flagged: one query for the meter's alerts per batch
    assert m["id"] != other["id"]


def test_a_crash_between_counting_and_firing_fires_once_on_redelivery(aws, monkeypatch):
    m = meter()
    a = new_alert(m["id"], 5)
    real = alert_counters.fire
    calls = []

    def crash_once(counter):
        calls.append(counter.customer)
        if len(calls) == 1:
            raise RuntimeError("injected: the function died before firing")
        return real(counter)

    monkeypatch.setattr(alert_counters, "fire", crash_once)
    pump = stream_pump(aws)
    send(7)
    pump.settle()  # the first delivery counts and owes the firing, then fails; the retry fires it
    assert len(calls) == 2
    assert [f["value"] for f in fired()] == [7]
    assert fired()[0]["alert"]["id"] == a["id"]
    send(1)
    pump.settle()
    assert len(fired()) == 1


def test_a_concurrent_deactivation_drops_an_owed_firing(aws, monkeypatch):
    m = meter()
    a = new_alert(m["id"], 5)
    real = alert_counters.fire

    def deactivate_first(counter):
        alerts.change(A, a["id"], {}, "deactivate")
        return real(counter)

    monkeypatch.setattr(alert_counters, "fire", deactivate_first)
    pump = stream_pump(aws)
    send(7)
    pump.settle()
    assert fired() == []
    monkeypatch.setattr(alert_counters, "fire", real)
    alerts.change(A, a["id"], {}, "activate")
    send(1)
    pump.settle()
    assert [f["value"] for f in fired()] == [8]


def test_redelivered_batches_move_counters_once(aws):
    m = meter()
    new_alert(m["id"], 1000)
    records = []
    pump = stream_pump(aws, lambda event: records.extend(event["Records"]) or {"batchItemFailures": []})
    for n in range(10):
        send(n + 1, identifier=f"i{n}")
    adjustments.create_v1(A, {"event_name": "tokens", "cancel": {"identifier": "i3"}})
    pump.settle()
    for _ in range(3):
        assert aggregate.handle_batch(records) == {"batchItemFailures": []}
        assert aggregate.handle_batch(records[::-1][:4][::-1]) == {"batchItemFailures": []}
    (counter,) = [
        i
        for i in boto3.resource("dynamodb").Table(aws.tables["RollupsTable"]).scan()["Items"]
        if i["pk"].startswith("AC#")
    ]
    assert counter["total"] == str(sum(range(1, 11)) - 4)


def test_alerts_fire_in_live_mode_too(aws):
    live = Principal("acct_alerts", True)  # live mode reads the claim alone (no test clocks)
    m = meter(who=live)
    pump = stream_pump(aws)
    new_alert(m["id"], 3, who=live)
    send(4, who=live)
    pump.settle()
    assert [(f["value"], f["livemode"]) for f in fired(live)] == [(4, True)]
    assert fired() == []  # the test mode of the same account saw nothing
