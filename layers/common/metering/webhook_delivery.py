"""Webhook delivery: one queue message is one POST of one event to one endpoint.

The body is the event as `GET /v1/events/{id}` shows it (with its current
`pending_webhooks`), signed like Stripe signs it: header
`Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, which
`stripe.Webhook.construct_event(body, header, secret)` accepts as it is.

A 2xx answer is a success; anything else (another status, a redirect, a refused
connection, a timeout, an address that is no longer public) is a failed attempt, retried
with exponential backoff: attempt n+1 is due `base * 2**(n-1)` seconds after attempt n
fails (`WEBHOOK_RETRY_BASE_SECONDS`, default 60; each wait at most 12 hours), for as long
as the next attempt is due within 3 days of the first. Then the delivery is abandoned.
A success or an abandoned delivery decrements the event's `pending_webhooks` once
(conditional on the endpoint still being pending on the event), so a redelivered queue
message never counts twice and never POSTs an event the endpoint already acknowledged.
Deliveries to an endpoint that was deleted or disabled are abandoned.

Nothing here runs in the API or ingestion path: publishers only enqueue.
"""

import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from aws_lambda_powertools.metrics import MetricUnit

from metering import snapshot_events, webhook_queue, webhooks, wire
from metering.errors import StripeError
from metering.observability import logger, metrics

RETRY_WINDOW_SECONDS = 3 * 86400
MAX_BACKOFF_SECONDS = 12 * 3600
USER_AGENT = "metering-webhooks/1.0"


def base_seconds() -> float:
    return float(os.environ.get("WEBHOOK_RETRY_BASE_SECONDS") or 60)


def timeout_seconds() -> float:
    return float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS") or 10)


def backoff(attempt: int) -> float:
    """Seconds between failed attempt `attempt` (1-based) and the next one."""
    return min(MAX_BACKOFF_SECONDS, base_seconds() * 2 ** (attempt - 1))


def signature(secret: str, payload: str, timestamp: int) -> str:
    """The `Stripe-Signature` header of a payload signed at `timestamp`."""
    import hashlib
    import hmac

    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer that is not 2xx: the attempt failed


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)


def post(url: str, body: str, secret: str) -> int | None:
    """POST a signed body; the HTTP status, or None when no answer came (refused, timeout)."""
    request = urllib.request.Request(
        url,
        data=body.encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "Stripe-Signature": signature(secret, body, int(time.time())),
        },
    )
    try:
        with _opener.open(request, timeout=timeout_seconds()) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException, ValueError):
        return None


def deliver(message: dict) -> str:
    """One attempt of one delivery: `delivered`, `retry`, `abandoned`, `deferred` (not due
    yet: sent back to the queue) or `skipped` (already settled, or the event expired).
    Raises when the outcome could not be recorded, so the queue gives the message again."""
    now = time.time()
    scope, event_id, endpoint_id = message["scope"], message["event"], message["endpoint"]
    attempt = int(message.get("attempt") or 1)
    first = float(message.get("first") or now)
    not_before = message.get("not_before")
    if not_before is not None and float(not_before) - now > 0.5:
        _send(message, float(not_before) - now)
        return "deferred"
    item = snapshot_events.get_item(scope, event_id, consistent=True)
    if item is None or not snapshot_events.is_pending(item, endpoint_id):
        return "skipped"
    endpoint = webhooks.find(scope, endpoint_id)
    if endpoint is None or endpoint.get("status") != "enabled":
        snapshot_events.settle(scope, event_id, endpoint_id)
        _log("abandoned: the endpoint was deleted or disabled", message)
        return "abandoned"
    body = wire.dumps(snapshot_events.load(item))
    try:
        webhooks.check_url(endpoint["url"], bool(endpoint.get("livemode")))
        status = post(endpoint["url"], body, endpoint["secret"])
    except StripeError as exc:  # the host now resolves to an address that is not public
        status = None
        _log(f"refused: {exc.message}", message)
    if status is not None and 200 <= status < 300:
        snapshot_events.settle(scope, event_id, endpoint_id)
        _log("delivered", message, status)
        return "delivered"
    wait = backoff(attempt)
    if now + wait > first + RETRY_WINDOW_SECONDS:
        snapshot_events.settle(scope, event_id, endpoint_id)
        _log("abandoned after the retry window", message, status)
        return "abandoned"
    retry = webhook_queue.message(
        scope, event_id, endpoint_id, attempt + 1, first=int(first), not_before=now + wait
    )
    _send(retry, wait)
    _log(f"failed; attempt {attempt + 1} in {wait:g} s", message, status)
    return "retry"


def _send(message: dict, wait: float) -> None:
    delay = min(webhook_queue.MAX_DELAY_SECONDS, math.ceil(max(0.0, wait)))  # longer waits: `not_before`
    if not webhook_queue.send([(message, delay)]):
        raise RuntimeError("could not enqueue the next webhook attempt")


def _log(outcome: str, message: dict, status: int | None = None) -> None:
    logger.info(
        f"webhook {outcome}",
        extra={
            "event_id": message["event"],
            "endpoint_id": message["endpoint"],
            "attempt": message.get("attempt"),
            "status": status,
        },
    )


def handle_records(records: list[dict]) -> dict:
    """An SQS batch (ReportBatchItemFailures): attempts run concurrently; a record whose
    outcome could not be recorded is reported, and the queue gives it again later."""

    def one(record: dict) -> str:
        try:
            return deliver(json.loads(record["body"]))
        except Exception:
            logger.exception("webhook delivery failed", extra={"message_id": record.get("messageId")})
            return "failed"

    if not records:
        return {"batchItemFailures": []}
    with ThreadPoolExecutor(max_workers=min(10, len(records))) as pool:
        outcomes = list(pool.map(one, records))
    for outcome in set(outcomes):  # WebhooksDelivered, WebhooksRetry, WebhooksAbandoned, ...
        metrics.add_metric(
            name=f"Webhooks{outcome.capitalize()}", unit=MetricUnit.Count, value=outcomes.count(outcome)
        )
    failed = [r["messageId"] for r, outcome in zip(records, outcomes, strict=True) if outcome == "failed"]
    return {"batchItemFailures": [{"itemIdentifier": m} for m in failed]}
