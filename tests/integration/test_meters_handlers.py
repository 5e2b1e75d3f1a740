"""The account, authorizer and meters handlers invoked with the events/ files against moto."""

import json

import pytest

from tests.conftest import sample_event


@pytest.fixture
def sample_account(aws):
    from metering.accounts import create_key

    create_key(account_id="acct_sample", secret="sk_test_sample")
    return "acct_sample"


def body(result: dict) -> dict:
    return json.loads(result["body"])


def header(result: dict, name: str):
    for field in ("headers", "multiValueHeaders"):
        for key, value in (result.get(field) or {}).items():
            if key.lower() == name.lower():
                return value[0] if isinstance(value, list) else value
    return None


def test_authorizer_allows_a_known_key_and_puts_the_account_in_context(sample_account, handler):
    result = handler("AuthorizerFunction", sample_event("authorizer.json"))
    assert result["context"] == {"account_id": "acct_sample", "livemode": "false"}
    assert result["policyDocument"]["Statement"][0]["Effect"] == "Allow"


@pytest.mark.parametrize("auth", ["Bearer sk_test_unknown", "Bearer nonsense", "Basic abc", ""])
def test_authorizer_rejects_unknown_keys(sample_account, handler, auth):
    event = sample_event("authorizer.json")
    event["headers"]["Authorization"] = auth
    with pytest.raises(Exception, match="Unauthorized"):
        handler("AuthorizerFunction", event)


def test_authorizer_rejects_a_revoked_key(sample_account, handler):
    from metering.accounts import revoke_key

    assert revoke_key("sk_test_sample")
    with pytest.raises(Exception, match="Unauthorized"):
        handler("AuthorizerFunction", sample_event("authorizer.json"))


def test_keys_are_stored_hashed(sample_account, aws):
    import boto3

    items = boto3.client("dynamodb").scan(TableName=aws.tables["MainTable"])["Items"]
    assert items and "sk_test_sample" not in json.dumps(items)


def test_account(sample_account, handler):
    result = handler("AccountFunction", sample_event("get_account.json"))
    assert result["statusCode"] == 200
    assert body(result) == {"id": "acct_sample", "object": "account", "livemode": False}
    assert header(result, "Request-Id").startswith("req_")


def test_meter_lifecycle_through_the_sample_events(sample_account, handler):
    created = handler("MetersFunction", sample_event("create_meter.json"))
    assert created["statusCode"] == 200, created["body"]
    meter = body(created)
    assert meter["value_settings"] == {"event_payload_key": "tokens"}
    assert meter["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    meter_id = meter["id"]

    def with_id(name):
        return json.loads(json.dumps(sample_event(name)).replace("mtr_sample", meter_id))

    assert body(handler("MetersFunction", with_id("retrieve_meter.json")))["id"] == meter_id
    assert body(handler("MetersFunction", with_id("update_meter.json")))["display_name"] == "Renamed"
    deactivated = body(handler("MetersFunction", with_id("deactivate_meter.json")))
    assert deactivated["status"] == "inactive" and deactivated["status_transitions"]["deactivated_at"]
    listed = body(handler("MetersFunction", sample_event("list_meters.json")))
    assert listed["data"] == []  # the sample lists active meters only
    reactivated = body(handler("MetersFunction", with_id("reactivate_meter.json")))
    assert reactivated["status"] == "active" and reactivated["status_transitions"]["deactivated_at"] is None
    listed = body(handler("MetersFunction", sample_event("list_meters.json")))
    assert [m["id"] for m in listed["data"]] == [meter_id]


def test_unknown_meter_is_a_stripe_404(sample_account, handler):
    result = handler("MetersFunction", sample_event("retrieve_meter.json"))
    assert result["statusCode"] == 404
    assert body(result)["error"] == {
        "type": "invalid_request_error",
        "code": "resource_missing",
        "param": "id",
        "message": "No such billing meter: 'mtr_sample'",
    }


def test_idempotent_replay_of_the_sample_create(sample_account, handler):
    first = handler("MetersFunction", sample_event("create_meter.json"))
    again = handler("MetersFunction", sample_event("create_meter.json"))
    assert again["statusCode"] == first["statusCode"] == 200
    assert again["body"] == first["body"]
    assert header(again, "Idempotent-Replayed") == "true"
    assert header(first, "Idempotent-Replayed") is None


def test_lifecycle_events_are_recorded(sample_account, handler):
    from metering.notifications import list_events

    meter_id = body(handler("MetersFunction", sample_event("create_meter.json")))["id"]
    events, _ = list_events("acct_sample.test", 10, None)
    assert [(e["type"], e["related_object"]["id"]) for e in events] == [("billing.meter.created", meter_id)]
