"""v2 meter event sessions: short-lived tokens for the high-throughput stream endpoint."""

import hmac
import secrets

from metering import clock, store
from metering.accounts import Principal, bearer, digest
from metering.config import settings
from metering.errors import StripeError, unauthorized
from metering.ids import new_id
from metering.keys import key
from metering.notifications import rfc3339

LIFETIME_SECONDS = 15 * 60
EXPIRED_DOC_URL = "https://docs.stripe.com/error-codes"


def create(who: Principal) -> dict:
    token = "mek_" + secrets.token_urlsafe(32)
    now = int(clock.now())
    session_id = new_id("mes")
    store.put_new(
        settings().main_table,
        {
            "pk": key("SESS", digest(token)),
            "sk": "SESSION",
            "hash": digest(token),
            "id": session_id,
            "account_id": who.account_id,
            "livemode": who.livemode,
            "expires": now + LIFETIME_SECONDS,
            "expires_at": now + LIFETIME_SECONDS + 3600,  # TTL cleanup, after the token is dead
        },
    )
    return {
        "id": session_id,
        "object": "v2.billing.meter_event_session",
        "authentication_token": token,
        "created": rfc3339(now),
        "expires_at": rfc3339(now + LIFETIME_SECONDS),
        "livemode": who.livemode,
    }


def authenticate(authorization: str | None) -> Principal:
    """The account of a session token; 401 for keys, unknown and expired tokens."""
    token = bearer(authorization)
    if not token:
        raise unauthorized("Provide a meter event session token as 'Authorization: Bearer <token>'.")
    if token.startswith(("sk_", "rk_")):
        raise unauthorized(
            "This endpoint takes a meter event session token from POST /v2/billing/meter_event_session, "
            "not a secret key."
        )
    item = store.get(settings().main_table, key("SESS", digest(token)), "SESSION")
    if item is None or not hmac.compare_digest(item["hash"], digest(token)):
        raise unauthorized("Invalid meter event session token.")
    if int(item["expires"]) <= clock.now():
        # Stripe's error for this case: type temporary_session_expired (the SDKs raise
        # TemporarySessionExpiredError for it), code billing_meter_event_session_expired.
        raise StripeError(
            "The meter event session has expired; create a new one.",
            401,
            "temporary_session_expired",
            "billing_meter_event_session_expired",
            should_retry=False,
            doc_url=EXPIRED_DOC_URL,
        )
    return Principal(item["account_id"], bool(item["livemode"]))
