"""Meters API with the official stripe SDK against `metering-local serve`."""

import uuid

import pytest
import requests
import stripe

from tests.contract.conftest import KEYS


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


def create(client, **extra):
    params = {"display_name": "Tokens", "event_name": unique("ev"), "default_aggregation": {"formula": "sum"}}
    return client.v1.billing.meters.create({**params, **extra})


def test_account_and_livemode(runner):
    response = requests.get(f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {KEYS[2]}"})
    assert response.status_code == 200 and response.headers["Request-Id"].startswith("req_")
    assert response.json()["object"] == "account" and response.json()["livemode"] is True
    test_mode = requests.get(
        f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {KEYS[0]}"}
    ).json()
    assert test_mode["livemode"] is False and test_mode["id"] != response.json()["id"]


def test_create_retrieve_update_deactivate_reactivate(client):
    meter = create(
        client,
        customer_mapping={"type": "by_id", "event_payload_key": "customer"},
        value_settings={"event_payload_key": "tokens"},
        event_time_window="hour",
    )
    assert meter.object == "billing.meter" and meter.id.startswith("mtr_") and meter.livemode is False
    assert meter.customer_mapping.event_payload_key == "customer"
    assert meter.value_settings.event_payload_key == "tokens"
    assert meter.event_time_window == "hour" and meter.status == "active"
    assert client.v1.billing.meters.retrieve(meter.id).display_name == "Tokens"
    renamed = client.v1.billing.meters.update(meter.id, {"display_name": "Renamed"})
    assert renamed.display_name == "Renamed" and renamed.updated >= meter.updated
    off = client.v1.billing.meters.deactivate(meter.id)
    assert off.status == "inactive" and off.status_transitions.deactivated_at
    on = client.v1.billing.meters.reactivate(meter.id)
    assert on.status == "active" and on.status_transitions.deactivated_at is None


def test_defaults_are_stored_and_echoed(client):
    meter = create(client)
    again = client.v1.billing.meters.retrieve(meter.id)
    assert again.customer_mapping.event_payload_key == "stripe_customer_id"
    assert again.customer_mapping.type == "by_id"
    assert again.value_settings.event_payload_key == "value"
    assert again.event_time_window is None


def test_list_auto_paging_and_status_filter(runner):
    client = runner.client(KEYS[1])
    made = [create(client).id for _ in range(12)]
    off = made[3]
    client.v1.billing.meters.deactivate(off)
    seen = [m.id for m in client.v1.billing.meters.list({"limit": 5}).auto_paging_iter()]
    assert [i for i in seen if i in made] == made[::-1]
    active = [
        m.id for m in client.v1.billing.meters.list({"status": "active", "limit": 100}).auto_paging_iter()
    ]
    assert off not in active and set(made) - {off} <= set(active)
    inactive = client.v1.billing.meters.list({"status": "inactive"})
    assert off in [m.id for m in inactive.data]


def test_errors_are_stripe_shaped(client):
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meters.retrieve("mtr_missing")
    assert err.value.http_status == 404 and err.value.code == "resource_missing" and err.value.param == "id"
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meters.create({"display_name": "x", "default_aggregation": {"formula": "sum"}})
    assert err.value.code == "parameter_missing" and err.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError) as err:
        create(client, default_aggregation={"formula": "median"})
    assert err.value.param == "default_aggregation[formula]"
    meter = create(client)
    with pytest.raises(stripe.InvalidRequestError) as err:
        client.v1.billing.meters.update(meter.id, {"event_name": "changed"})
    assert err.value.code == "parameter_unknown" and err.value.param == "event_name"
    with pytest.raises(stripe.InvalidRequestError) as err:
        create(client, event_name=meter.event_name)
    assert err.value.param == "event_name"


def test_bad_keys_are_401(runner):
    for key in ("sk_test_nope", "pk_test_abc"):
        with pytest.raises(stripe.AuthenticationError) as err:
            runner.client(key).v1.billing.meters.list()
        assert err.value.http_status == 401
    response = requests.get(f"{runner.api_url}/v1/billing/meters")
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"


def test_accounts_are_isolated(runner):
    mine = create(runner.client(KEYS[0]))
    other = runner.client(KEYS[1])
    with pytest.raises(stripe.InvalidRequestError) as err:
        other.v1.billing.meters.retrieve(mine.id)
    assert err.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError):
        other.v1.billing.meters.deactivate(mine.id)
    assert mine.id not in [m.id for m in other.v1.billing.meters.list({"limit": 100}).auto_paging_iter()]
    # the same event name is free in another account
    assert (
        other.v1.billing.meters.create(
            {"display_name": "x", "event_name": mine.event_name, "default_aggregation": {"formula": "count"}}
        ).event_name
        == mine.event_name
    )


def test_idempotent_replay_and_key_reuse(runner):
    key = str(uuid.uuid4())
    body = {"display_name": "Idem", "event_name": unique("idem"), "default_aggregation[formula]": "sum"}
    headers = {"Authorization": f"Bearer {KEYS[0]}", "Idempotency-Key": key}
    first = requests.post(f"{runner.api_url}/v1/billing/meters", data=body, headers=headers)
    again = requests.post(f"{runner.api_url}/v1/billing/meters", data=body, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.content == first.content and again.headers.get("Idempotent-Replayed") == "true"
    other = requests.post(
        f"{runner.api_url}/v1/billing/meters", data={**body, "display_name": "Other"}, headers=headers
    )
    assert other.status_code == 400 and other.json()["error"]["type"] == "idempotency_error"
    # a failed request is not stored: the key can be used again once the input is fixed
    key2 = str(uuid.uuid4())
    bad = requests.post(
        f"{runner.api_url}/v1/billing/meters",
        data={"display_name": "x"},
        headers={**headers, "Idempotency-Key": key2},
    )
    assert bad.status_code == 400
    fixed = requests.post(
        f"{runner.api_url}/v1/billing/meters",
        data={**body, "event_name": unique("idem")},
        headers={**headers, "Idempotency-Key": key2},
    )
    assert fixed.status_code == 200


def test_sdk_sends_idempotency_keys_and_retries_are_replays(client):
    meter = client.v1.billing.meters.create(
        {"display_name": "K", "event_name": unique("k"), "default_aggregation": {"formula": "sum"}},
        {"idempotency_key": "fixed-" + uuid.uuid4().hex},
    )
    assert meter.id.startswith("mtr_")


def test_json_body_and_curl_style_arrays(runner):
    headers = {"Authorization": f"Bearer {KEYS[0]}"}
    created = requests.post(
        f"{runner.api_url}/v1/billing/meters",
        json={"display_name": "J", "event_name": unique("json"), "default_aggregation": {"formula": "last"}},
        headers=headers,
    )
    assert created.status_code == 200 and created.json()["default_aggregation"]["formula"] == "last"
    listed = requests.get(f"{runner.api_url}/v1/billing/meters?limit=1&expand[]=data", headers=headers)
    assert listed.status_code == 200 and listed.json()["url"] == "/v1/billing/meters"
    unknown = requests.get(f"{runner.api_url}/v1/billing/nothing", headers=headers)
    assert unknown.status_code == 404 and "error" in unknown.json()
