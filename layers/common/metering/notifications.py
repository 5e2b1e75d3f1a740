"""Stripe v2 thin events: stored for `GET /v2/core/events` and published on EventBridge."""

import json
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

from botocore.exceptions import ClientError

from metering import aws, store, wire
from metering.accounts import scope_of
from metering.config import settings
from metering.errors import invalid
from metering.ids import new_id
from metering.keys import key
from metering.observability import logger

RETENTION_SECONDS = 30 * 24 * 3600
SOURCE = "metering"


def rfc3339(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def meter_ref(meter_id: str) -> dict:
    return {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}


def publish(account_id: str, livemode: bool, type_: str, related: dict | None, data: dict | None) -> dict:
    """Record an event for the account, then put it on the bus. Returns the event."""
    now = time.time()
    event = {
        "id": new_id("evt"),
        "object": "v2.core.event",
        "type": type_,
        "created": rfc3339(now),
        "livemode": livemode,
        "context": None,
        "reason": None,
        "related_object": related,
        "data": data,
    }
    body = wire.dumps(event)
    store.put_new(
        settings().main_table,
        {
            "pk": key("ACCT", scope_of(account_id, livemode)),
            "sk": key("EVT", event["id"]),
            "doc": body,
            "expires_at": int(now) + RETENTION_SECONDS,
        },
    )
    try:
        aws.events().put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": type_,
                    "Detail": json.dumps({"account": account_id, "event": json.loads(body)}),
                    "EventBusName": settings().event_bus,
                }
            ]
        )
    except ClientError:
        # The event is stored and readable through /v2/core/events; the bus is best effort.
        logger.exception("EventBridge put_events failed", extra={"event_id": event["id"]})
    return event


def get_event(scope: str, event_id: str) -> dict | None:
    item = store.get(settings().main_table, key("ACCT", scope), key("EVT", event_id))
    return json.loads(item["doc"]) if item else None


def list_events(
    scope: str, limit: int, page_after: str | None, object_id: str | None = None
) -> tuple[list[dict], bool]:
    """Newest first; `object_id` keeps events whose related object is that object."""
    items, has_more = store.page(
        settings().main_table,
        key("ACCT", scope),
        key("EVT", ""),
        limit,
        starting_after=page_after,
        keep=lambda item: object_id is None or f'"related_object":{{"id":"{object_id}"' in item["doc"],
    )
    return [json.loads(item["doc"]) for item in items], has_more


def list_page(scope: str, params: dict) -> dict:
    """`GET /v2/core/events`: Stripe v2 list with `page` tokens."""
    from metering.wire import reject_unknown

    reject_unknown(params, {"limit", "page", "object_id"})
    try:
        limit = int(params.get("limit") or 20)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise invalid("limit must be an integer between 1 and 100.", "limit")
    object_id = params.get("object_id") or None
    events, has_more = list_events(scope, limit, params.get("page") or None, object_id)
    next_url = None
    if has_more:
        query = {"limit": limit, "page": events[-1]["id"], **({"object_id": object_id} if object_id else {})}
        next_url = "/v2/core/events?" + urlencode(query)
    return {"data": events, "next_page_url": next_url, "previous_page_url": None}
