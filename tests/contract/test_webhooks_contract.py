"""Billing alerts and signed webhook deliveries with the stripe SDK against `metering-local serve`.

The runner allows webhook endpoints on loopback (it sets WEBHOOKS_ALLOW_LOOPBACK=1) and
the conftest shortens the retry backoff (WEBHOOK_RETRY_BASE_SECONDS=1); the receiver is a
small HTTP server on 127.0.0.1.
"""

import time
import uuid

import pytest
import requests
import stripe

from tests.contract.conftest import KEYS
from tests.webhook_receiver import Receiver


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


def wait(condition, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def meter_with_alert(client, gte: int, customer: str | None = None):
    meter = client.v1.billing.meters.create(
        {
            "display_name": "API calls",
            "event_name": f"calls_{uuid.uuid4().hex[:10]}",
            "default_aggregation": {"formula": "sum"},
        }
    )
    threshold = {"gte": gte, "meter": meter.id, "recurrence": "one_time"}
    if customer:
        threshold["filters"] = [{"type": "customer", "customer": customer}]
    alert = client.v1.billing.alerts.create(
        {"alert_type": "usage_threshold", "title": "Heavy usage", "usage_threshold": threshold}
    )
    return meter, alert


def send(client, meter, value: int, customer: str = "cus_hooks"):
    client.v1.billing.meter_events.create(
        {"event_name": meter.event_name, "payload": {"stripe_customer_id": customer, "value": str(value)}}
    )


def pending_webhooks(runner, event_id: str) -> int:
    """The event's pending_webhooks as stored (the v1 snapshot event item of the main table)."""
    account = requests.get(f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {KEYS[0]}"})
    item = runner.boto("dynamodb").get_item(
        TableName="MainTable",
        Key={"pk": {"S": f"ACCT#{account.json()['id']}.test"}, "sk": {"S": f"V1EVT#{event_id}"}},
        ConsistentRead=True,
    )["Item"]
    return int(item["pw"]["N"])


def test_an_alert_crossed_with_the_sdk_is_delivered_signed(runner, client):
    with Receiver() as receiver:
        hook = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["billing.alert.triggered"], "description": "alerts"}
        )
        try:
            assert hook.secret.startswith("whsec_") and hook.status == "enabled"
            assert "secret" not in client.v1.webhook_endpoints.retrieve(hook.id).to_dict()
            meter, alert = meter_with_alert(client, 100, "cus_hooks")
            assert alert.status == "active" and alert.usage_threshold.filters[0].customer == "cus_hooks"
            assert alert.id in [a.id for a in client.v1.billing.alerts.list({"meter": meter.id}).data]
            send(client, meter, 60)
            send(client, meter, 500, customer="cus_other")  # another customer: the filter keeps it out
            time.sleep(1.5)
            assert receiver.received == []
            send(client, meter, 45)
            wait(lambda: len(receiver.received) == 1)
            (received,) = receiver.received
            event = stripe.Webhook.construct_event(
                received["body"], received["headers"]["Stripe-Signature"], hook.secret
            )
            assert event.type == "billing.alert.triggered" and event.object == "event"
            triggered = event.data.object
            assert triggered.object == "billing.alert_triggered"
            assert triggered.alert.id == alert.id and triggered.customer == "cus_hooks"
            assert triggered.value == 105 and triggered.livemode is False
            with pytest.raises(stripe.SignatureVerificationError):
                stripe.Webhook.construct_event(
                    received["body"], received["headers"]["Stripe-Signature"], "whsec_x"
                )
            wait(lambda: pending_webhooks(runner, event.id) == 0)
            send(client, meter, 1000)  # fires once per customer
            time.sleep(1.5)
            assert len(receiver.received) == 1
            assert client.v1.billing.alerts.deactivate(alert.id).status == "inactive"
            assert client.v1.billing.alerts.activate(alert.id).status == "active"
            archived = client.v1.billing.alerts.archive(alert.id)
            assert archived.status == "archived"
            assert alert.id not in [a.id for a in client.v1.billing.alerts.list({"meter": meter.id}).data]
        finally:
            assert client.v1.webhook_endpoints.delete(hook.id).deleted is True


def test_a_receiver_failing_twice_acknowledges_the_event_once(runner, client):
    with Receiver([500, 500, 200]) as receiver:
        hook = client.v1.webhook_endpoints.create(
            {"url": receiver.url, "enabled_events": ["billing.alert.triggered"]}
        )
        try:
            meter, alert = meter_with_alert(client, 10)
            send(client, meter, 10, customer="cus_retry")
            wait(lambda: len(receiver.received) >= 1)
            event_id = receiver.events()[0]["id"]
            assert pending_webhooks(runner, event_id) == 1  # still pending while it fails
            assert receiver.events()[0]["pending_webhooks"] == 1
            wait(lambda: len(receiver.acknowledged()) == 1)
            wait(lambda: pending_webhooks(runner, event_id) == 0)
            time.sleep(3)  # no attempt after the acknowledgement
            assert [r["status"] for r in receiver.received] == [500, 500, 200]
            assert {e["id"] for e in receiver.events()} == {event_id}
            for received in receiver.received:
                stripe.Webhook.construct_event(
                    received["body"], received["headers"]["Stripe-Signature"], hook.secret
                )
            assert receiver.events()[0]["data"]["object"]["alert"]["id"] == alert.id
        finally:
            client.v1.webhook_endpoints.delete(hook.id)


def test_webhook_endpoints_refuse_private_addresses(client):
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.webhook_endpoints.create({"url": "http://169.254.169.254/latest", "enabled_events": ["*"]})
    assert exc.value.param == "url"
    with pytest.raises(stripe.InvalidRequestError) as exc:
        client.v1.webhook_endpoints.create({"url": "http://10.0.0.8/hook", "enabled_events": ["*"]})
    assert exc.value.param == "url"
