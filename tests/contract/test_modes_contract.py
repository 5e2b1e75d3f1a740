"""Issue 16 class 7: test mode and live mode of ONE account are separate worlds, on every route.

A live key is registered for the account of the contract's first test key (with the admin
CLI, as an operator would), then every route is driven with both keys through the SDK.
"""

import subprocess
import sys
import time
import uuid

import pytest
import requests
import stripe

from tests.contract.conftest import KEYS, ROOT

LIVE = "sk_live_modes_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def pair(runner):
    test = runner.client(KEYS[0], max_network_retries=0)
    account = requests.get(f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {KEYS[0]}"})
    account_id = account.json()["id"]
    code = (
        "import sys; from metering.accounts import create_key; "
        f"print(create_key(account_id={account_id!r}, livemode=True, secret={LIVE!r})[1])"
    )
    env = {"MAIN_TABLE": "MainTable", "AWS_ENDPOINT_URL": runner.aws_url, "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == account_id, out.stderr
    live = runner.client(LIVE, max_network_retries=0)
    same = requests.get(f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {LIVE}"}).json()
    assert (same["id"], same["livemode"]) == (account_id, True)
    return test, live, account_id


def name() -> str:
    return "ev_" + uuid.uuid4().hex[:10]


def meter(client, event_name: str):
    return client.v1.billing.meters.create(
        {"display_name": "m", "event_name": event_name, "default_aggregation": {"formula": "sum"}}
    )


def settle(fn, want, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = fn()
        if got == want:
            return got
        time.sleep(0.2)
    return fn()


def usage(client, meter_id: str, customer: str) -> int:
    now = int(time.time())
    start = now - now % 86400 - 86400
    params = {"customer": customer, "start_time": start, "end_time": start + 3 * 86400}
    return int(client.v1.billing.meters.event_summaries.list(meter_id, params).data[0].aggregated_value)


def test_meters_and_their_names_are_per_mode(pair):
    test, live, _ = pair
    event_name = name()
    test_meter = meter(test, event_name)
    assert test_meter.livemode is False
    assert all(m.id != test_meter.id for m in live.v1.billing.meters.list({"limit": 100}).data)
    for call in (
        lambda: live.v1.billing.meters.retrieve(test_meter.id),
        lambda: live.v1.billing.meters.update(test_meter.id, {"display_name": "x"}),
        lambda: live.v1.billing.meters.deactivate(test_meter.id),
        lambda: live.v1.billing.meters.reactivate(test_meter.id),
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            call()
        assert err.value.http_status == 404
    live_meter = meter(live, event_name)  # the name is free in the other mode
    assert live_meter.livemode is True and live_meter.id != test_meter.id


def test_events_identifiers_adjustments_and_summaries_are_per_mode(pair):
    test, live, _ = pair
    event_name = name()
    test_meter, live_meter = meter(test, event_name), meter(live, event_name)
    payload = {"stripe_customer_id": "cus_modes", "value": "3"}
    test.v1.billing.meter_events.create({"event_name": event_name, "payload": payload, "identifier": "same"})
    live.v1.billing.meter_events.create(  # the same identifier is not a duplicate in the other mode
        {"event_name": event_name, "payload": {**payload, "value": "40"}, "identifier": "same"}
    )
    live.v2.billing.meter_events.create(
        {"event_name": event_name, "payload": {**payload, "value": "500"}, "identifier": "v2"}
    )
    with pytest.raises(stripe.InvalidRequestError) as err:  # test's identifier is unknown to live
        live.v1.billing.meter_event_adjustments.create(
            {"event_name": event_name, "type": "cancel", "cancel": {"identifier": "v2-unknown"}}
        )
    assert err.value.param == "cancel[identifier]"
    with pytest.raises(stripe.InvalidRequestError) as err:
        test.v1.billing.meter_event_adjustments.create(
            {"event_name": event_name, "type": "cancel", "cancel": {"identifier": "v2"}}
        )
    assert err.value.param == "cancel[identifier]"
    assert settle(lambda: usage(test, test_meter.id, "cus_modes"), 3) == 3
    assert settle(lambda: usage(live, live_meter.id, "cus_modes"), 540) == 540
    with pytest.raises(stripe.InvalidRequestError) as err:
        usage(live, test_meter.id, "cus_modes")
    assert err.value.http_status == 404


def test_stream_sessions_write_only_their_mode(pair, runner):
    test, live, _ = pair
    event_name = name()
    test_meter, live_meter = meter(test, event_name), meter(live, event_name)
    session = live.v2.billing.meter_event_session.create()
    assert session.livemode is True
    stream = stripe.StripeClient(
        session.authentication_token, base_addresses={"meter_events": runner.api_url}
    )
    events = [{"event_name": event_name, "payload": {"stripe_customer_id": "cus_s", "value": "7"}}]
    stream.v2.billing.meter_event_stream.create({"events": events})
    assert settle(lambda: usage(live, live_meter.id, "cus_s"), 7) == 7
    assert usage(test, test_meter.id, "cus_s") == 0


def test_core_events_are_per_mode(pair, runner):
    test, live, _ = pair
    meter(test, name())

    def events(key):
        headers = {"Authorization": f"Bearer {key}"}
        return requests.get(f"{runner.api_url}/v2/core/events?limit=100", headers=headers).json()["data"]

    test_ids = {e["id"] for e in events(KEYS[0])}
    assert test_ids and not test_ids & {e["id"] for e in events(LIVE)}
    some = next(iter(test_ids))
    headers = {"Authorization": f"Bearer {LIVE}"}
    assert requests.get(f"{runner.api_url}/v2/core/events/{some}", headers=headers).status_code == 404


def test_idempotency_keys_are_per_mode(pair):
    test, live, _ = pair
    key = "modes-" + uuid.uuid4().hex
    params = {"display_name": "m", "event_name": name(), "default_aggregation": {"formula": "sum"}}
    first = test.v1.billing.meters.create(params, {"idempotency_key": key})
    other = live.v1.billing.meters.create(params, {"idempotency_key": key})  # not a replay of test's
    assert first.id != other.id and (first.livemode, other.livemode) == (False, True)


def test_billing_objects_are_per_mode(pair):
    test, live, _ = pair
    customer = test.v1.customers.create({"email": "modes@example.com"})
    assert customer.livemode is False
    with pytest.raises(stripe.InvalidRequestError) as err:
        live.v1.customers.retrieve(customer.id)
    assert err.value.http_status == 404
    assert all(c.id != customer.id for c in live.v1.customers.list({"limit": 100}).data)


def test_bulk_files_count_in_the_mode_of_their_folder(pair, runner):
    test, live, account_id = pair
    event_name = name()
    test_meter, live_meter = meter(test, event_name), meter(live, event_name)
    ts = int(time.time()) - 60
    body = f"timestamp,event_name,payload_stripe_customer_id,payload_value\n{ts},{event_name},cus_b,9\n"
    s3 = runner.boto("s3")
    s3.put_object(Bucket="metering-uploads", Key=f"uploads/{account_id}/live/{event_name}.csv", Body=body)
    assert settle(lambda: usage(live, live_meter.id, "cus_b"), 9, timeout=30) == 9
    assert usage(test, test_meter.id, "cus_b") == 0
