"""Webhook delivery messages on the delivery queue (SQS, `WEBHOOK_QUEUE_URL`).

One message is one delivery of one v1 snapshot event to one endpoint:
`{"scope", "event", "endpoint", "attempt", "first", "not_before"}`. `attempt` counts from
1, `first` is when the first attempt was due (the event's creation), `not_before` when
this attempt is due. SQS delays a message by at most 15 minutes, so a longer backoff is
a message whose `not_before` is later than its delay: the delivery function sends it
back with the rest of the wait until it is due.
"""

import json
import os

from metering import aws
from metering.observability import logger

MAX_DELAY_SECONDS = 900  # SQS's limit for DelaySeconds
BATCH = 10  # SendMessageBatch takes at most 10 entries


def queue_url() -> str | None:
    return os.environ.get("WEBHOOK_QUEUE_URL") or None


def message(
    scope: str,
    event_id: str,
    endpoint_id: str,
    attempt: int = 1,
    first: int | None = None,
    not_before: int | None = None,
) -> dict:
    return {
        "scope": scope,
        "event": event_id,
        "endpoint": endpoint_id,
        "attempt": attempt,
        "first": first,
        "not_before": not_before,
    }


def send(messages: list[tuple[dict, int]]) -> bool:
    """Enqueue (message, delay seconds) pairs; False (logged) when some could not be sent."""
    url = queue_url()
    if url is None:
        logger.error(
            "WEBHOOK_QUEUE_URL is not set: webhook deliveries not enqueued", extra={"count": len(messages)}
        )
        return False
    ok = True
    for start in range(0, len(messages), BATCH):
        entries = [
            {
                "Id": str(n),
                "MessageBody": json.dumps(body, separators=(",", ":")),
                "DelaySeconds": max(0, min(MAX_DELAY_SECONDS, int(delay))),
            }
            for n, (body, delay) in enumerate(messages[start : start + BATCH])
        ]
        try:
            out = aws.sqs().send_message_batch(QueueUrl=url, Entries=entries)
        except Exception:
            logger.exception("webhook deliveries could not be enqueued", extra={"count": len(entries)})
            ok = False
            continue
        if out.get("Failed"):
            logger.error("webhook deliveries refused by the queue", extra={"failed": out["Failed"]})
            ok = False
    return ok
