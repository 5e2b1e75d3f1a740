"""Meter events with the official stripe SDK against `metering-local serve`."""

import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
import stripe

from tests.contract.conftest import KEYS


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


@pytest.fixture
def meter(client):
    return client.v1.billing.meters.create(
        {"display_name": "Tokens", "event_name": unique("tok"), "default_aggregation": {"formula": "sum"}}
    )


def send(client, meter, value="5", customer="cus_1", **extra):
    return client.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": customer, "value": value}, **extra}
    )


def test_v1_event_with_default_keys(client, meter):
    event = send(client, meter, identifier="id-1-" + meter.id, timestamp=int(time.time()) - 60)
    assert event.object == "billing.meter_event" and event.livemode is False
    assert event.payload.to_dict() == {"stripe_customer_id": "cus_1", "value": "5"}
    assert event.identifier == "id-1-" + meter.id and not hasattr(event, "id")
    generated = send(client, meter)
    assert generated.identifier and generated.identifier != event.identifier


def test_v1_event_with_custom_keys(client):
    meter = client.v1.billing.meters.create(
        {
            "display_name": "Custom",
            "event_name": unique("custom"),
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_id", "event_payload_key": "account#id"},
            "value_settings": {"event_payload_key": "tokens/in"},
        }
    )
    event = client.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"account#id": "cus_x", "tokens/in": "12.75"}}
    )
    assert event.payload.to_dict() == {"account#id": "cus_x", "tokens/in": "12.75"}


def test_duplicate_identifier_is_400(client, meter):
    identifier = unique("dup")
    send(client, meter, identifier=identifier)
    with pytest.raises(stripe.InvalidRequestError) as err:
        send(client, meter, identifier=identifier)
    assert err.value.http_status == 400
    assert err.value.user_message == f"An event already exists with identifier {identifier}."
    assert err.value.headers.get("Stripe-Should-Retry") == "false"


def test_idempotency_key_replays_an_event_post(client, meter):
    key = str(uuid.uuid4())
    identifier = unique("idem")
    first = client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": identifier,
        },
        {"idempotency_key": key},
    )
    again = client.v1.billing.meter_events.create(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "c", "value": "1"},
            "identifier": identifier,
        },
        {"idempotency_key": key},
    )
    assert again.identifier == first.identifier and again.created == first.created
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"


@pytest.mark.parametrize(
    "payload, extra, code",
    [
        ({"value": "1"}, {}, "meter_event_no_customer_defined"),
        ({"stripe_customer_id": "c"}, {}, "meter_event_value_not_found"),
        ({"stripe_customer_id": "c", "value": "ten"}, {}, "meter_event_invalid_value"),
        (
            {"stripe_customer_id": "c", "value": "1.23456789012345678"},
            {},
            "meter_event_value_too_many_digits",
        ),
        (
            {"stripe_customer_id": "c", "value": "1"},
            {"timestamp": int(time.time()) - 40 * 86400},
            "timestamp_too_far_in_past",
        ),
        (
            {"stripe_customer_id": "c", "value": "1"},
            {"timestamp": int(time.time()) + 3600},
            "timestamp_in_future",
        ),
    ],
)
def test_validation_codes(client, meter, payload, extra, code):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meter_events.create({"event_name": meter.event_name, "payload": payload, **extra})
    assert err.value.code == code and err.value.http_status == 400


def test_unknown_and_inactive_meters(client, meter):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meter_events.create(
            {"event_name": unique("nothing"), "payload": {"stripe_customer_id": "c"}}
        )
    assert err.value.code == "no_meter"
    client.v1.billing.meters.deactivate(meter.id)
    deadline = time.time() + 5
    while True:
        try:
            send(client, meter)
        except stripe.InvalidRequestError as exc:
            assert exc.code == "archived_meter"
            break
        assert time.time() < deadline, "deactivation did not take effect within the cache window"
        time.sleep(0.5)


def test_v2_session_stream_of_100_and_error_reports(runner, client, meter):
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session" and session.authentication_token
    stream = runner.client(session.authentication_token)
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "cus_s", "value": "1"},
            "identifier": f"{meter.id}-{i}",
            "timestamp": now,
        }
        for i in range(99)
    ]
    events.append(
        {
            "event_name": meter.event_name,
            "payload": {"stripe_customer_id": "cus_s", "value": "x"},
            "identifier": f"{meter.id}-bad",
        }
    )
    assert stream.v2.billing.meter_event_stream.create({"events": events}) is None
    reports = client.v2.core.events.list({"object_id": meter.id})
    report = next(e for e in reports.data if e.type == "v1.billing.meter.error_report_triggered")
    full = client.v2.core.events.retrieve(report.id)
    error_type = full.to_dict()["data"]["reason"]["error_types"][0]
    assert error_type["code"] == "meter_event_invalid_value"
    assert error_type["sample_errors"][0]["request"]["identifier"] == f"{meter.id}-bad"


def test_stream_rejects_secret_keys_and_bad_batches(runner, client, meter):
    url = f"{runner.api_url}/v2/billing/meter_event_stream"
    with_key = requests.post(
        url,
        json={"events": [{"event_name": meter.event_name, "payload": {}}]},
        headers={"Authorization": f"Bearer {KEYS[0]}"},
    )
    assert with_key.status_code == 401
    token = client.v2.billing.meter_event_session.create().authentication_token
    for events in (
        [],
        [{"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "1"}}] * 101,
    ):
        bad = requests.post(url, json={"events": events}, headers={"Authorization": f"Bearer {token}"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "events"


def test_expired_session_is_401_with_its_code(runner, client, meter):
    token = client.v2.billing.meter_event_session.create().authentication_token
    requests.get(f"{runner.api_url}/_local/clock?offset={16 * 60}")
    try:
        out = requests.post(
            f"{runner.api_url}/v2/billing/meter_event_stream",
            json={"events": [{"event_name": meter.event_name, "payload": {}}]},
            headers={"Authorization": f"Bearer {token}"},
        )
    finally:
        requests.get(f"{runner.api_url}/_local/clock?offset=0")
    assert out.status_code == 401 and out.json()["error"]["code"] == "billing_meter_event_session_expired"


def test_v2_single_event(client, meter):
    event = client.v2.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": "c", "value": "2"}}
    )
    assert event.object == "v2.billing.meter_event"
