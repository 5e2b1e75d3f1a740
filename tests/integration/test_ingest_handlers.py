"""The ingest and core-events handlers invoked with the events/ files against moto."""

import json

import pytest

from tests.conftest import sample_event
from tests.integration.test_meters_handlers import body


@pytest.fixture
def ai_tokens(aws, handler):
    from metering.accounts import create_key

    create_key(account_id="acct_sample", secret="sk_test_sample")
    created = handler("MetersFunction", sample_event("create_meter.json"))
    assert created["statusCode"] == 200
    return json.loads(created["body"])


def test_v1_event_and_its_replay(ai_tokens, handler):
    first = handler("IngestFunction", sample_event("create_meter_event.json"))
    assert first["statusCode"] == 200, first["body"]
    assert body(first)["payload"] == {"stripe_customer_id": "cus_NciAYcXfLnqBoz", "tokens": "25"}
    again = handler("IngestFunction", sample_event("create_meter_event.json"))
    assert again["body"] == first["body"]  # same Idempotency-Key: a replay, not a duplicate


def test_v1_duplicate_without_idempotency_key(ai_tokens, handler):
    event = sample_event("create_meter_event.json")
    del event["headers"]["Idempotency-Key"]
    assert handler("IngestFunction", event)["statusCode"] == 200
    dup = handler("IngestFunction", event)
    assert dup["statusCode"] == 400
    assert body(dup)["error"]["message"] == "An event already exists with identifier sample-event-1."
    assert (dup.get("multiValueHeaders") or {}).get("Stripe-Should-Retry") == ["false"] or (
        dup.get("headers") or {}
    ).get("Stripe-Should-Retry") == "false"


def test_v2_event(ai_tokens, handler):
    out = handler("IngestFunction", sample_event("create_meter_event_v2.json"))
    assert out["statusCode"] == 200 and body(out)["object"] == "v2.billing.meter_event"


def test_session_stream_and_error_report_events(ai_tokens, handler):
    session = body(handler("IngestFunction", sample_event("create_meter_event_session.json")))
    stream = sample_event("meter_event_stream.json", session_token=session["authentication_token"])
    out = handler("IngestFunction", stream)
    assert out["statusCode"] == 200 and body(out) == {}
    listed = body(handler("CoreEventsFunction", sample_event("list_core_events.json")))
    report = next(e for e in listed["data"] if e["type"] == "v1.billing.meter.no_meter_found")
    retrieve = json.loads(
        json.dumps(sample_event("retrieve_core_event.json")).replace("evt_sample", report["id"])
    )
    assert body(handler("CoreEventsFunction", retrieve)) == report
    assert handler("CoreEventsFunction", sample_event("retrieve_core_event.json"))["statusCode"] == 404


def test_stream_refuses_secret_keys_and_unknown_tokens(ai_tokens, handler):
    for token in ("sk_test_sample", "mek_unknown"):
        out = handler("IngestFunction", sample_event("meter_event_stream.json", session_token=token))
        assert out["statusCode"] == 401 and body(out)["error"]["type"] == "invalid_request_error"


def test_body_over_one_megabyte_is_rejected(ai_tokens, handler):
    event = sample_event("create_meter_event_v2.json")
    event["body"] = json.dumps({"event_name": "ai_tokens", "payload": {"x": "y" * (1024 * 1024)}})
    out = handler("IngestFunction", event)
    assert out["statusCode"] == 400 and body(out)["error"]["param"] == "body"


def test_event_replays_need_no_idempotency_record(aws, ai_tokens, handler):
    """The event item carries the key and the request's fingerprint: a replay answers the
    first response, other parameters under the key are an idempotency_error, and the
    Powertools idempotency table is never written for meter events (one write per event)."""
    import boto3

    def records():
        return boto3.client("dynamodb").scan(TableName=aws.tables["IdempotencyTable"])["Items"]

    before = records()  # the meter's creation has one
    event = sample_event("create_meter_event.json")
    event["headers"]["Idempotency-Key"] = "replay-no-record"
    event["body"] = event["body"].replace("identifier=", "ignored=").split("&ignored=")[0]
    first = handler("IngestFunction", event)
    again = handler("IngestFunction", event)
    assert first["statusCode"] == again["statusCode"] == 200, first["body"]
    assert again["body"] == first["body"]
    headers = again.get("headers") or {k: v[-1] for k, v in again["multiValueHeaders"].items()}
    assert headers.get("Idempotent-Replayed") == "true"
    other = dict(event, body=event["body"].replace("tokens%5D=25", "tokens%5D=26"))
    mismatch = handler("IngestFunction", other)
    assert (
        mismatch["statusCode"] == 400 and json.loads(mismatch["body"])["error"]["type"] == "idempotency_error"
    )
    assert records() == before
