"""Issue 16: valid but hostile input must not lose usage, count it twice, or cross tenants.

Each test names the class it proves; each failed before the fix it guards.
"""

import json
import time
from decimal import Decimal

import boto3
import pytest
from botocore.exceptions import ClientError

from metering import aggregate, event_store, ingest, keys, meters, notifications, summaries, wire
from metering.accounts import Principal
from metering.errors import StripeError
from metering.rollups import bucket_pk, bucket_sk, ledger_pk, ledger_sk
from tests.integration.test_aggregate import BASE, DAY
from tests.streams import insert_record, stream_pump

A = Principal("acct_hostile", False)
A_LIVE = Principal("acct_hostile", True)
B = Principal("acct_other", False)
WIDE = "\U0001d518"  # 4 bytes in UTF-8
LONG_ID = (WIDE * 97 + "#%/")[:100]  # 100 characters, separators included: ~390 bytes
LONG_NAME = (WIDE * 98 + "%#")[:100]


def meter(who=A, name="tokens", **spec):
    params = {"display_name": "m", "event_name": name, "default_aggregation": {"formula": "sum"}, **spec}
    return meters.create(who, params)


def send(who, customer, value, identifier, name="tokens", ts=BASE + 10):
    payload = {"stripe_customer_id": customer, "value": value}
    params = {"event_name": name, "payload": payload, "identifier": identifier, "timestamp": str(ts)}
    return ingest.create_v1(who, params)


def total(who, m, customer, start=BASE, end=BASE + DAY):
    params = {"customer": customer, "start_time": str(start), "end_time": str(end)}
    return summaries.list_summaries(who, m["id"], params)["data"][0]["aggregated_value"]


@pytest.fixture(autouse=True)
def at_base():
    from metering import clock

    clock.shift(BASE + 4 * 3600 - time.time())
    yield
    clock.shift(0)


# Class 2: keys built from user strings stay within DynamoDB's limits.


def test_largest_keys_fit_dynamodb_limits():
    scope = Principal("acct_" + "f" * 40, True).scope
    meter_id = "mtr_" + "f" * 24
    big = WIDE * 100
    worst = "#" * 100  # each becomes 3 bytes
    for user in (big, worst):
        assert len(user) == 100
        partitions = [
            ledger_pk(scope, meter_id, user, 10**10),
            bucket_pk(scope, meter_id, user),
            event_store.event_key(scope, user)["pk"],
            event_store.slot_key(scope, meter_id, user, 10**10)["pk"],
        ]
        sorts = [ledger_sk(10**10 - 1, "9" * 20, user), bucket_sk("M", 10**10 - 60), meters.name_key(user)]
        assert max(len(k.encode()) for k in partitions) <= 600 < keys.MAX_PARTITION_KEY_BYTES
        assert max(len(k.encode()) for k in sorts) <= 450 < keys.MAX_SORT_KEY_BYTES


@pytest.mark.parametrize("window", [None, "hour"])
def test_multibyte_strings_at_every_limit_are_stored_and_counted(aws, window):
    m = meter(name=LONG_NAME, **({"event_time_window": window} if window else {}))
    send(A, LONG_ID, "7", LONG_ID, name=LONG_NAME)
    send(A, LONG_ID, "5", LONG_ID[:-1] + "x", name=LONG_NAME, ts=BASE + 7200)
    stream_pump(aws).settle()
    assert total(A, m, LONG_ID) == Decimal(12)
    with pytest.raises(StripeError) as err:
        send(A, LONG_ID, "1", LONG_ID, name=LONG_NAME)
    assert err.value.code == "duplicate_identifier"


@pytest.mark.parametrize(
    "customer, identifier, param",
    [
        ("c" * 101, "ok1", "payload[stripe_customer_id]"),
        (WIDE * 101, "ok2", "payload[stripe_customer_id]"),
        ("cus_1", WIDE * 101, "identifier"),
        ("cus_\ud800", "ok3", "payload[stripe_customer_id]"),
        ("cus_1", "id_\udfff", "identifier"),
    ],
)
def test_strings_over_the_limits_are_refused_naming_the_param(aws, customer, identifier, param):
    meter()
    with pytest.raises(StripeError) as err:
        send(A, customer, "1", identifier)
    assert (err.value.status, err.value.param) == (400, param)
    assert boto3.client("dynamodb").scan(TableName=aws.tables["EventsTable"])["Items"] == []


def test_summary_customer_is_limited_like_the_payload(aws):
    m = meter()
    with pytest.raises(StripeError) as err:
        total(A, m, "c" * 101)
    assert err.value.param == "customer"


def test_a_poison_record_is_reported_and_the_rest_of_its_batch_counts(aws):
    m, other = meter(), meter(B)
    good = [
        {"t": "raw", "st": "ok", "scope": s, "mid": mid, "cust": "cus_1", "ts": BASE + i, "seq": f"{i:020d}"}
        | {"ident": f"g{i}", "v": "1"}
        for i, (s, mid) in enumerate([(A.scope, m["id"]), (B.scope, other["id"])] * 3)
    ]
    poison = dict(good[0], cust="c" * 2100, ident="poison", seq="9" * 20)  # written before the limits
    records = [insert_record(image, n) for n, image in enumerate([*good[:3], poison, *good[3:]])]
    assert aggregate.handle_batch(records) == {"batchItemFailures": []}
    assert total(A, m, "cus_1") == Decimal(3) and total(B, other, "cus_1") == Decimal(3)
    url = aws.queues["AggregateDeadLetterQueue"]
    (message,) = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    reported = json.loads(message["Body"])["record"]
    assert reported["dynamodb"]["SequenceNumber"] == "3"


def test_a_transient_failure_is_retried_not_reported(aws, monkeypatch):
    m = meter()
    image = {"t": "raw", "st": "ok", "scope": A.scope, "mid": m["id"], "cust": "c", "ts": BASE, "seq": "1"}
    real = aggregate._apply

    def throttled(ops, *rest):
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Transact")

    monkeypatch.setattr(aggregate, "_apply", throttled)
    monkeypatch.setattr(aggregate, "MAX_ATTEMPTS", 1)
    record = insert_record(image | {"ident": "t", "v": "2"}, 1)
    assert aggregate.handle_batch([record]) == {"batchItemFailures": [{"itemIdentifier": "1"}]}
    monkeypatch.setattr(aggregate, "_apply", real)
    assert aggregate.handle_batch([record]) == {"batchItemFailures": []}
    assert total(A, m, "c") == Decimal(2)


# Class 3: output encoding cannot be forged by user strings.


def test_no_user_string_turns_into_a_number():
    forged = {"display_name": "\x00num:12", "other": '"\\u0000num:12"', "value": Decimal("0.30")}
    assert json.loads(wire.dumps(forged)) == {
        "display_name": "\x00num:12",
        "other": '"\\u0000num:12"',
        "value": 0.3,
    }


def test_forged_markers_in_user_strings_stay_strings_in_every_answer(aws):
    """The old writer turned the string "\x00num:1" into a bare number: the answer, and the
    stored /v2/core/events documents that echo the string, became invalid JSON for good."""
    meter()
    forged = "\x00num:1"
    payload = {"stripe_customer_id": forged, "value": "1"}
    answer = json.loads(wire.dumps(ingest.create_v1(A, {"event_name": "tokens", "payload": payload})))
    assert answer["payload"]["stripe_customer_id"] == forged
    ingest.stream(A, {"events": [{"event_name": forged, "payload": payload}]})  # no meter: reported
    page = json.loads(wire.dumps(notifications.list_page(A.scope, {})))
    (report,) = [e for e in page["data"] if e["type"] == "v1.billing.meter.no_meter_found"]
    sample = report["data"]["reason"]["error_types"][0]["sample_errors"][0]["error_message"]
    assert forged in sample


# Class 4: a stream request never answers an error after storing events.


def _throttle():
    return ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "x"}}, "PutItem"
    )


def test_stream_faults_after_some_writes_are_retried_and_answer_200(aws, monkeypatch):
    m = meter()
    real, failing = event_store.record, {"e1": 2, "e3": 1}

    def flaky(event, source=None):
        n = event.payload["n"]
        if failing.get(n, 0):
            failing[n] -= 1
            if n == "e3":
                real(event, source)  # the write happened; its answer was lost
            raise _throttle()
        return real(event, source)

    monkeypatch.setattr(event_store, "record", flaky)
    events = [
        {"event_name": "tokens", "payload": {"stripe_customer_id": "c", "value": "1", "n": f"e{i}"}}
        for i in range(5)
    ]
    assert ingest.stream(A, {"events": events}) == {}
    stream_pump(aws).settle()
    assert total(A, m, "c", BASE - DAY, BASE + DAY) == Decimal(5)


def test_stream_that_stores_nothing_fails_and_its_retry_counts_once(aws, monkeypatch):
    m = meter()
    real, calls = event_store.record, []

    def down(event, source=None):
        calls.append(1)
        if len(calls) <= 4 * 2:  # every attempt of the first request
            raise _throttle()
        return real(event, source)

    monkeypatch.setattr(event_store, "record", down)
    events = [{"event_name": "tokens", "payload": {"stripe_customer_id": "c", "value": "2"}}] * 2
    with pytest.raises(StripeError) as err:
        ingest.stream(A, {"events": events})
    assert err.value.status == 429
    assert ingest.stream(A, {"events": events}) == {}  # the SDK's retry
    stream_pump(aws).settle()
    assert total(A, m, "c", BASE - DAY, BASE + DAY) == Decimal(4)


def test_stream_answers_200_when_error_reports_cannot_be_published(aws, monkeypatch):
    m = meter()

    def broken(*args, **kwargs):
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "PutItem")

    monkeypatch.setattr(notifications, "publish", broken)
    events = [
        {"event_name": "tokens", "payload": {"stripe_customer_id": "c", "value": "3"}},
        {"event_name": "ghost", "payload": {"stripe_customer_id": "c", "value": "3"}},
    ]
    assert ingest.stream(A, {"events": events}) == {}
    stream_pump(aws).settle()
    assert total(A, m, "c", BASE - DAY, BASE + DAY) == Decimal(3)


# Class 5: a summary's work is bounded by the buckets that exist, not by the range.


def test_a_huge_range_reads_only_existing_buckets(aws, monkeypatch):
    from metering import store

    m = meter()
    send(A, "c", "4", "h1")
    stream_pump(aws).settle()
    reads = []
    real = store.query

    def counting(*args, **kwargs):
        for item in real(*args, **kwargs):
            reads.append(item)
            yield item

    monkeypatch.setattr(store, "query", counting)
    started = time.perf_counter()
    assert total(A, m, "c", 0, 9_999_999_960) == Decimal(4)
    assert time.perf_counter() - started < 5  # was tens of seconds; bound generously
    assert len(reads) <= 3  # the event's day bucket (plus at most its hour and minute)
    assert summaries.cover_ranges(0, 10**10)[0][0] == "D"
    with pytest.raises(StripeError) as err:
        total(A, m, "c", 0, 10**10 + 60)
    assert err.value.param == "end_time"


# Class 7: test and live mode are separate worlds.


def test_modes_share_nothing(aws):
    test_meter = meter(A)
    assert meters.list_meters(A_LIVE, {})["data"] == []
    with pytest.raises(StripeError) as err:
        meters.retrieve(A_LIVE, test_meter["id"], {})
    assert err.value.status == 404
    live_meter = meter(A_LIVE)  # the same event name is free in the other mode
    send(A, "c", "1", "same")
    send(A_LIVE, "c", "10", "same")  # identifiers are per mode too
    stream_pump(aws).settle()
    assert total(A, test_meter, "c") == Decimal(1)
    assert total(A_LIVE, live_meter, "c") == Decimal(10)
    with pytest.raises(StripeError):
        total(A_LIVE, test_meter, "c")
    test_events = {e["id"] for e in notifications.list_events(A.scope, 100, None)[0]}
    live_events = {e["id"] for e in notifications.list_events(A_LIVE.scope, 100, None)[0]}
    assert test_events and live_events and not test_events & live_events
    assert all(notifications.get_event(A_LIVE.scope, e) is None for e in test_events)


@pytest.mark.parametrize("identifier", [None, "given"])
def test_a_v1_retry_after_a_lost_answer_counts_once(aws, monkeypatch, identifier):
    """The SDK retries a 500 with the same Idempotency-Key; failed requests are not replayed,
    so the retry runs again: it must find its own event, not store a second one."""
    m = meter()
    real = event_store.record

    def lost_answer(event, source=None, fingerprint=None):
        real(event, source, fingerprint)
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "lost"}}, "PutItem")

    params = {"event_name": "tokens", "payload": {"stripe_customer_id": "c", "value": "6"}}
    params |= {"identifier": identifier} if identifier else {}
    monkeypatch.setattr(event_store, "record", lost_answer)
    with pytest.raises(ClientError):
        ingest.create_v1(A, dict(params), request_key="idem-1")
    monkeypatch.setattr(event_store, "record", real)
    retried = ingest.create_v1(A, dict(params), request_key="idem-1")
    assert retried["identifier"] == (identifier or retried["identifier"])
    other = ingest.create_v1(A, {**params, "identifier": None}, request_key="idem-2")  # another request
    stream_pump(aws).settle()
    assert other["identifier"] != retried["identifier"]
    assert total(A, m, "c", BASE - DAY, BASE + DAY) == Decimal(12)
