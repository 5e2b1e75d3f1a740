"""Webhook endpoints, v1 snapshot events and their signed delivery with retries, against moto."""

import json
import time

import pytest
import stripe

from metering import aws as clients
from metering import snapshot_events, webhook_delivery, webhook_queue, webhooks
from metering.accounts import Principal
from metering.errors import StripeError
from metering_local.sqs_trigger import QueuePoller
from tests.integration.test_alerts import meter, new_alert, send
from tests.streams import stream_pump
from tests.webhook_receiver import Receiver

A = Principal("acct_alerts", False)  # the account of test_alerts' helpers
LIVE = Principal("acct_alerts", True)


@pytest.fixture
def loopback(monkeypatch):
    monkeypatch.setenv("WEBHOOKS_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_SECONDS", "0.2")


def endpoint(url: str, events=("*",), who=A, **extra) -> dict:
    return webhooks.create(who, {"url": url, "enabled_events": list(events), **extra})


def emit(type_: str = "customer.created", who=A) -> dict:
    """Write one v1 snapshot event in a transaction, then publish it, as billing does."""
    pending = snapshot_events.for_principal(who)
    put = pending.add(type_, {"id": "cus_1", "object": "customer"})
    clients.dynamodb().transact_write_items(TransactItems=[put])
    event = pending.events[0]
    pending.publish()
    return event


def deliver_until(aws, done, timeout: float = 15.0) -> None:
    """Run the delivery function on the queue (as the local runner does) until `done()`."""
    poller = _poller(aws)
    deadline = time.time() + timeout
    while not done():
        assert time.time() < deadline, "deliveries did not finish in time"
        if not poller.poll():
            time.sleep(0.1)


def drain(aws, seconds: float) -> None:
    """Run the delivery function on whatever the queue gives for `seconds`."""
    poller, deadline = _poller(aws), time.time() + seconds
    while time.time() < deadline:
        if not poller.poll():
            time.sleep(0.1)


def _poller(aws) -> QueuePoller:
    return QueuePoller(
        aws.queues["WebhookDeliveryQueue"],
        lambda event: webhook_delivery.handle_records(event["Records"]),
        None,
        visibility=2,
        report_failures=True,
    )


def pending_webhooks(event_id: str, who=A) -> int:
    return snapshot_events.get(who.scope, event_id, consistent=True)["pending_webhooks"]


def test_endpoint_crud(aws, loopback):
    created = endpoint(
        "http://127.0.0.1:9/hook", ["customer.created", "billing.alert.triggered"], description="d"
    )
    assert created["id"].startswith("we_") and created["secret"].startswith("whsec_")
    assert created["object"] == "webhook_endpoint" and created["status"] == "enabled"
    assert created["enabled_events"] == ["customer.created", "billing.alert.triggered"]
    fetched = webhooks.retrieve(A, created["id"], {})
    assert "secret" not in fetched  # only at creation
    assert fetched == {k: v for k, v in created.items() if k != "secret"}
    updated = webhooks.update(
        A, created["id"], {"disabled": "true", "metadata": {"team": "billing"}, "enabled_events": ["*"]}
    )
    assert updated["status"] == "disabled" and updated["metadata"] == {"team": "billing"}
    assert updated["enabled_events"] == ["*"]
    updated = webhooks.update(
        A, created["id"], {"disabled": "false", "metadata": {"team": ""}, "description": ""}
    )
    assert updated["status"] == "enabled" and updated["metadata"] == {} and updated["description"] is None
    second = endpoint("http://localhost:9/other")
    assert [e["id"] for e in webhooks.list_endpoints(A, {})["data"]] == [second["id"], created["id"]]
    assert webhooks.delete(A, created["id"], {}) == {
        "id": created["id"],
        "object": "webhook_endpoint",
        "deleted": True,
    }
    with pytest.raises(StripeError) as exc:
        webhooks.retrieve(A, created["id"], {})
    assert exc.value.status == 404
    with pytest.raises(StripeError) as exc:
        webhooks.retrieve(LIVE, second["id"], {})  # the other mode's endpoint
    assert exc.value.status == 404


def test_at_most_16_endpoints(aws, loopback):
    made = [endpoint(f"http://127.0.0.1:9/{n}") for n in range(16)]
    with pytest.raises(StripeError) as exc:
        endpoint("http://127.0.0.1:9/17")
    assert exc.value.status == 400
    webhooks.delete(A, made[0]["id"], {})
    endpoint("http://127.0.0.1:9/17")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://[fe80::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://224.0.0.1/hook",
        "ftp://203.0.113.9/hook",
        "not a url",
        "http:///nohost",
    ],
)
def test_urls_that_are_not_public_are_refused_naming_url(aws, monkeypatch, url):
    monkeypatch.delenv("WEBHOOKS_ALLOW_LOOPBACK", raising=False)
    with pytest.raises(StripeError) as exc:
        endpoint(url)
    assert exc.value.status == 400 and exc.value.param == "url"


def test_the_loopback_setting_allows_loopback_only(aws, loopback):
    assert endpoint("http://127.0.0.1:8080/hook")["url"] == "http://127.0.0.1:8080/hook"
    assert endpoint("http://[::1]:8080/hook")
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/", "http://192.168.0.1/"):
        with pytest.raises(StripeError) as exc:
            endpoint(url)
        assert exc.value.param == "url"


def test_public_addresses_are_accepted_and_live_mode_needs_https(aws, monkeypatch):
    monkeypatch.delenv("WEBHOOKS_ALLOW_LOOPBACK", raising=False)
    assert endpoint("https://93.184.215.14/hook")  # an address literal: nothing is resolved or sent
    assert endpoint("http://93.184.215.14/hook")  # http in test mode
    with pytest.raises(StripeError) as exc:
        endpoint("http://93.184.215.14/hook", who=LIVE)
    assert exc.value.param == "url"
    assert endpoint("https://93.184.215.14/hook", who=LIVE)["livemode"] is True


@pytest.mark.parametrize(
    "events, param",
    [
        ([], "enabled_events"),
        (["v1.billing.alert.triggered"], "enabled_events[0]"),  # thin events go to event destinations
        (["customer.created", "no dots"], "enabled_events[1]"),
    ],
)
def test_enabled_events_are_checked(aws, loopback, events, param):
    with pytest.raises(StripeError) as exc:
        endpoint("http://127.0.0.1:9/", events)
    assert exc.value.param == param


def test_the_signature_is_what_the_stripe_sdk_verifies():
    body = json.dumps({"id": "evt_1", "object": "event", "type": "customer.created", "data": {"object": {}}})
    header = webhook_delivery.signature("whsec_test", body, int(time.time()))
    event = stripe.Webhook.construct_event(body, header, "whsec_test")
    assert event.id == "evt_1"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, header, "whsec_other")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body + " ", header, "whsec_test")


def test_events_count_their_matching_endpoints(aws, loopback):
    endpoint("http://127.0.0.1:9/a", ["customer.created"])
    endpoint("http://127.0.0.1:9/b", ["*"])
    disabled = endpoint("http://127.0.0.1:9/c", ["*"])
    webhooks.update(A, disabled["id"], {"disabled": "true"})
    endpoint("http://127.0.0.1:9/d", ["invoice.paid"])
    created = emit("customer.created")
    assert created["pending_webhooks"] == 2 and pending_webhooks(created["id"]) == 2
    assert emit("invoice.paid")["pending_webhooks"] == 2
    assert emit("price.created")["pending_webhooks"] == 1
    assert emit("customer.created", who=LIVE)["pending_webhooks"] == 0  # endpoints are per mode


def test_a_failing_receiver_gets_the_event_once_acknowledged_after_retries(aws, loopback):
    with Receiver([500, 503, 200]) as receiver:
        hook = endpoint(receiver.url, ["customer.created"])
        event = emit()
        assert pending_webhooks(event["id"]) == 1
        started = time.time()
        deliver_until(aws, lambda: len(receiver.acknowledged()) == 1)
        assert time.time() - started >= 0.6  # waited 0.2 s, then 0.4 s (rounded up to whole seconds)
        drain(aws, 2.5)  # nothing left: no further attempt
    assert [r["status"] for r in receiver.received] == [500, 503, 200]
    for received in receiver.received:
        verified = stripe.Webhook.construct_event(
            received["body"], received["headers"]["Stripe-Signature"], hook["secret"]
        )
        assert verified.id == event["id"] and verified.type == "customer.created"
        assert received["headers"]["Content-Type"].startswith("application/json")
    assert receiver.events()[0]["pending_webhooks"] == 1
    assert pending_webhooks(event["id"]) == 0


def test_a_fired_alert_is_delivered(aws, loopback):
    with Receiver() as receiver:
        hook = endpoint(receiver.url, ["billing.alert.triggered"])
        m = meter()
        alert = new_alert(m["id"], 5)
        send(7)
        stream_pump(aws).settle()
        deliver_until(aws, lambda: len(receiver.acknowledged()) == 1)
    (received,) = receiver.received
    event = stripe.Webhook.construct_event(
        received["body"], received["headers"]["Stripe-Signature"], hook["secret"]
    )
    assert event.type == "billing.alert.triggered"
    assert event.data.object.alert.id == alert["id"] and event.data.object.value == 7
    assert pending_webhooks(event.id) == 0


def test_retries_give_up_after_three_days(aws, loopback, monkeypatch):
    monkeypatch.setenv("WEBHOOK_RETRY_BASE_SECONDS", "3600")
    sent = []
    monkeypatch.setattr(webhook_queue, "send", lambda messages: sent.extend(messages) or True)
    with Receiver([500]) as receiver:
        hook = endpoint(receiver.url)
        event = emit()
        sent.clear()
        message = webhook_queue.message(A.scope, event["id"], hook["id"], attempt=5, first=int(time.time()))
        assert webhook_delivery.deliver(message) == "retry"
        (retry, delay) = sent.pop()
        assert retry["attempt"] == 6 and delay == 900  # 16 hours, capped at 12: the queue waits 15 minutes
        assert retry["not_before"] - time.time() == pytest.approx(12 * 3600, abs=5)
        assert webhook_delivery.deliver(retry) == "deferred"  # not due yet: back to the queue
        (again, delay) = sent.pop()
        assert again == retry and delay == 900
        late = webhook_queue.message(
            A.scope, event["id"], hook["id"], attempt=9, first=int(time.time()) - 70 * 3600
        )
        assert webhook_delivery.deliver(late) == "abandoned"  # the next attempt would be past 3 days
        assert sent == []
        assert pending_webhooks(event["id"]) == 0
        assert webhook_delivery.deliver(late) == "skipped"  # already settled
    assert len(receiver.received) == 2


def test_deleted_endpoints_and_redirects(aws, loopback, monkeypatch):
    sent = []
    monkeypatch.setattr(webhook_queue, "send", lambda messages: sent.extend(messages) or True)
    with Receiver([302]) as receiver:
        hook = endpoint(receiver.url)
        event = emit()
        (first, _), *_ = sent
        assert webhook_delivery.deliver(first) == "retry"  # a redirect is not an acknowledgement
        webhooks.delete(A, hook["id"], {})
        assert webhook_delivery.deliver(sent[-1][0]) == "abandoned"
        assert pending_webhooks(event["id"]) == 0
    assert len(receiver.received) == 1


def test_an_unreachable_endpoint_is_a_failed_attempt(aws, loopback, monkeypatch):
    monkeypatch.setenv("WEBHOOK_TIMEOUT_SECONDS", "1")
    sent = []
    monkeypatch.setattr(webhook_queue, "send", lambda messages: sent.extend(messages) or True)
    with Receiver() as receiver:
        url = receiver.url
    hook = endpoint(url)  # nothing listens there any more
    emit()
    assert webhook_delivery.deliver(sent[0][0]) == "retry"
    assert sent[-1][0]["attempt"] == 2 and sent[-1][0]["endpoint"] == hook["id"]


def test_the_handlers_with_the_sample_events(aws, handler, monkeypatch):
    from metering import meters
    from tests.conftest import sample_event

    public = [(2, 1, 6, "", ("93.184.215.14", 443))]
    monkeypatch.setattr(webhooks.socket, "getaddrinfo", lambda *args, **kwargs: public)
    sample = Principal("acct_sample", False)
    m = meters.create(
        sample, {"display_name": "m", "event_name": "ai_tokens", "default_aggregation": {"formula": "sum"}}
    )
    event = json.loads(json.dumps(sample_event("create_alert.json")).replace("mtr_sample", m["id"]))
    created = handler("AlertsFunction", event)
    assert created["statusCode"] == 200, created["body"]
    assert json.loads(created["body"])["usage_threshold"]["filters"][0]["customer"] == "cus_NciAYcXfLnqBoz"
    listed = json.loads(handler("AlertsFunction", sample_event("list_alerts.json"))["body"])
    assert [a["id"] for a in listed["data"]] == [json.loads(created["body"])["id"]]
    hook = handler("WebhooksFunction", sample_event("create_webhook_endpoint.json"))
    assert hook["statusCode"] == 200, hook["body"]
    assert json.loads(hook["body"])["secret"].startswith("whsec_")
    listed = json.loads(handler("WebhooksFunction", sample_event("list_webhook_endpoints.json"))["body"])
    assert len(listed["data"]) == 1 and "secret" not in listed["data"][0]
    assert handler("WebhookDeliveryFunction", sample_event("webhook_delivery.json")) == {
        "batchItemFailures": []
    }
