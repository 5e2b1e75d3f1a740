"""Meter event ingest against moto: validation writes nothing, dedup, pre-aggregation races, key safety."""

import threading
import time
from decimal import Decimal

import boto3
import pytest

from metering import clock, ingest, meters
from metering.accounts import Principal
from metering.errors import StripeError

A = Principal("acct_a", False)
B = Principal("acct_b", False)


@pytest.fixture(autouse=True)
def fresh_cache():
    yield
    clock.shift(0)


def meter(who=A, **spec):
    params = {"display_name": "m", "event_name": "tokens", "default_aggregation": {"formula": "sum"}, **spec}
    return meters.create(who, params)


def event(customer="cus_1", value="5", name="tokens", **extra):
    return {"event_name": name, "payload": {"stripe_customer_id": customer, "value": value}, **extra}


def items(aws) -> list[dict]:
    from metering.store import from_item

    return [from_item(i) for i in boto3.client("dynamodb").scan(TableName=aws.tables["EventsTable"])["Items"]]


@pytest.mark.parametrize(
    "params, code, param",
    [
        (event(name="nothing"), "no_meter", "event_name"),
        (
            {"event_name": "tokens", "payload": {"value": "1"}},
            "meter_event_no_customer_defined",
            "payload[stripe_customer_id]",
        ),
        (
            {"event_name": "tokens", "payload": {"stripe_customer_id": "c"}},
            "meter_event_value_not_found",
            "payload[value]",
        ),
        (event(value="abc"), "meter_event_invalid_value", "payload[value]"),
        (event(value="NaN"), "meter_event_invalid_value", "payload[value]"),
        (event(value="1e3"), "meter_event_invalid_value", "payload[value]"),
        (event(value=""), "meter_event_invalid_value", "payload[value]"),
        (event(value="1234567890.123456"), "meter_event_value_too_many_digits", "payload[value]"),
        (event(timestamp=str(int(time.time()) - 36 * 86400)), "timestamp_too_far_in_past", "timestamp"),
        (event(timestamp=str(int(time.time()) + 86400)), "timestamp_in_future", "timestamp"),
        (event(timestamp="soon"), "parameter_invalid_integer", "timestamp"),
        ({"event_name": "tokens", "payload": "cus_1"}, None, "payload"),
        ({"event_name": "tokens", "payload": {f"k{i}": "1" for i in range(51)}}, None, "payload"),
        ({**event(), "colour": "red"}, "parameter_unknown", "colour"),
        ({"payload": {"stripe_customer_id": "c", "value": "1"}}, "parameter_missing", "event_name"),
        (event(identifier="i" * 101), "string_length_exceeds_maximum", "identifier"),
    ],
)
def test_every_rejection_names_its_code_and_writes_nothing(aws, params, code, param):
    meter()
    with pytest.raises(StripeError) as err:
        ingest.create_v1(A, params)
    assert err.value.status == 400 and err.value.param == param
    if code:
        assert err.value.code == code
    assert items(aws) == []


def test_inactive_meter_is_archived_meter(aws):
    m = meter()
    meters.set_status(A, m["id"], {}, active=False)
    with pytest.raises(StripeError) as err:
        ingest.create_v1(A, event())
    assert err.value.code == "archived_meter"


def test_count_meters_need_no_value_and_custom_keys_work(aws):
    meter(
        event_name="calls",
        default_aggregation={"formula": "count"},
        customer_mapping={"event_payload_key": "account"},
    )
    out = ingest.create_v1(A, {"event_name": "calls", "payload": {"account": "cus_9"}})
    assert out["payload"] == {"account": "cus_9"} and out["identifier"]
    meter(event_name="tok2", value_settings={"event_payload_key": "tokens"})
    ingest.create_v1(A, {"event_name": "tok2", "payload": {"stripe_customer_id": "c", "tokens": "12.5"}})
    assert sorted(str(i.get("v")) for i in items(aws)) == ["12.5", "None"]


def test_duplicate_identifier_is_rejected_and_stored_once(aws):
    meter()
    ingest.create_v1(A, event(identifier="dup"))
    with pytest.raises(StripeError) as err:
        ingest.create_v1(A, event(identifier="dup", value="7"))
    assert err.value.message == "An event already exists with identifier dup."
    assert err.value.should_retry is False
    assert [i["v"] for i in items(aws)] == ["5"]
    # identifiers are per account
    meter(B)
    ingest.create_v1(B, event(identifier="dup"))


def test_twenty_writers_with_one_identifier_store_it_once(aws):
    meter()
    results = []

    def send(i):
        try:
            ingest.create_v1(A, event(identifier="same", value=str(i)))
            results.append("ok")
        except StripeError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 1 and results.count("duplicate_identifier") == 19
    assert len(items(aws)) == 1


def test_twenty_writers_racing_on_one_window_leave_the_newest_received(aws):
    meter(event_time_window="hour")
    ts = int(time.time()) // 3600 * 3600 + 10
    if ts > time.time():
        ts -= 3600
    barrier = threading.Barrier(20)

    def send(i):
        barrier.wait()
        ingest.create_v1(A, event(value=str(i), identifier=f"w{i}", timestamp=str(ts + i)))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = items(aws)
    slots = [i for i in stored if i["t"] == "slot"]
    events = [i for i in stored if i["t"] == "pre"]
    assert len(slots) == 1 and len(events) == 20
    newest = max(events, key=lambda i: i["seq"])
    assert slots[0]["ident"] == newest["ident"] and slots[0]["v"] == newest["v"]
    assert sum(1 for i in events if i["st"] == "ok") >= 1


def test_a_later_event_replaces_the_window_even_with_an_earlier_timestamp(aws):
    meter(event_time_window="day")
    now = int(time.time())
    day = now - now % 86400
    ingest.create_v1(A, event(value="10", identifier="first", timestamp=str(max(day, now - 5))))
    ingest.create_v1(A, event(value="3", identifier="second", timestamp=str(day)))
    slots = [i for i in items(aws) if i["t"] == "slot"]
    assert [(s["ident"], s["v"]) for s in slots] == [("second", "3")]


def test_customers_and_identifiers_with_separators_never_mix(aws):
    meter(event_time_window="hour")
    ts = str(int(time.time()) - 1)
    for customer in ["a#b", "a", "a/b", "ä", "a%23b"]:
        ingest.create_v1(A, event(customer=customer, identifier=f"id:{customer}#/x", timestamp=ts))
    slots = [i for i in items(aws) if i["t"] == "slot"]
    assert sorted(s["cust"] for s in slots) == sorted(["a#b", "a", "a/b", "ä", "a%23b"])
    assert len({s["pk"] for s in slots}) == 5


def test_exact_decimal_values_are_stored_as_given(aws):
    meter()
    for i, value in enumerate(["0.1", "-2.50", "123456789012345"]):
        ingest.create_v1(A, event(value=value, identifier=str(i)))
    assert sorted(Decimal(i["v"]) for i in items(aws)) == sorted(
        Decimal(v) for v in ["0.1", "-2.5", "123456789012345"]
    )


def test_v2_single_event_uses_rfc3339(aws):
    meter()
    from metering.notifications import rfc3339

    stamp = rfc3339(int(time.time()) - 60)
    out = ingest.create_v2(A, {**event(), "timestamp": stamp})
    assert out["object"] == "v2.billing.meter_event" and out["timestamp"] == stamp
    with pytest.raises(StripeError) as err:
        ingest.create_v2(A, {**event(), "timestamp": "1234"})
    assert err.value.param == "timestamp"


def test_stream_persists_valid_events_and_reports_invalid_ones(aws):
    from metering.notifications import list_events

    meter()
    batch = [event(identifier=f"s{i}", value="1") for i in range(97)]
    batch += [event(name="ghost"), event(value="x", identifier="bad"), event(identifier="s1")]
    assert ingest.stream(A, {"events": batch}) == {}
    assert len(items(aws)) == 97
    reports, _ = list_events(A.scope, 10, None)
    by_type = {r["type"]: r for r in reports}
    codes = {
        t["code"]: t
        for t in by_type["v1.billing.meter.error_report_triggered"]["data"]["reason"]["error_types"]
    }
    assert set(codes) == {"meter_event_invalid_value", "duplicate_identifier"}
    assert codes["duplicate_identifier"]["sample_errors"][0]["request"]["identifier"] == "s1"
    ghost = by_type["v1.billing.meter.no_meter_found"]["data"]["reason"]["error_types"][0]
    assert ghost["code"] == "no_meter" and "ghost" in ghost["sample_errors"][0]["error_message"]


@pytest.mark.parametrize("events", [[], [event()] * 101, "nope", None])
def test_stream_batch_size_is_checked(aws, events):
    meter()
    with pytest.raises(StripeError) as err:
        ingest.stream(A, {"events": events} if events is not None else {})
    assert err.value.param == "events"
    assert items(aws) == []


def test_sessions_expire_and_keys_are_refused(aws):
    from metering import sessions

    session = sessions.create(A)
    assert sessions.authenticate("Bearer " + session["authentication_token"]) == A
    with pytest.raises(StripeError) as err:
        sessions.authenticate("Bearer sk_test_whatever")
    assert err.value.status == 401
    clock.shift(15 * 60 + 1)
    with pytest.raises(StripeError) as err:
        sessions.authenticate("Bearer " + session["authentication_token"])
    assert err.value.status == 401 and err.value.code == "billing_meter_event_session_expired"


def test_lifecycle_changes_are_seen_by_the_next_event(aws):
    """Issue 16 class 6: no cached miss, no cached status: create, deactivate and reactivate
    are seen by the very next event (this used to answer no_meter / archived_meter for 2 s)."""
    with pytest.raises(StripeError) as err:
        ingest.create_v1(A, event(identifier="before"))
    assert err.value.code == "no_meter"
    m = meter()  # created right after a miss for the same name
    ingest.create_v1(A, event(identifier="fresh"))
    meters.set_status(A, m["id"], {}, active=False)
    with pytest.raises(StripeError) as err:
        ingest.create_v1(A, event(identifier="while_inactive"))
    assert err.value.code == "archived_meter"
    meters.set_status(A, m["id"], {}, active=True)
    ingest.create_v1(A, event(identifier="reactivated"))
    assert {i["ident"] for i in items(aws)} == {"fresh", "reactivated"}


def test_other_modes_never_see_a_meter(aws):
    """Issue 16 class 7: a live key of the same account has no meters of test mode."""
    meter()
    live = Principal(A.account_id, True)
    with pytest.raises(StripeError) as err:
        ingest.create_v1(live, event(identifier="live_one"))
    assert err.value.code == "no_meter"
