"""Meter by event name: one strongly consistent read, never cached across requests.

The event-name claim item carries the meter's ingest configuration (id, formula, payload
keys, window, status) and is written in the same transaction as the meter on create,
deactivate and reactivate, so one consistent GetItem sees every lifecycle change at once:
an event sent right after its meter was created, deactivated or reactivated is judged by
the meter as it is now. Within one batch (a stream request, a bulk batch) `batch()`
memoises lookups, so a name is read once per batch, never remembered after it.

The claim also counts the meter's billing alerts that are not archived (`al_all` without
a customer filter, `al_cus` with one; metering.alerts keeps them in its transactions).
The meter returned carries them as `alerts` flags, which ingest copies into the event item
so the aggregate function reads alerts only for events of meters that have some.
"""

import threading
from contextlib import contextmanager

from metering import store
from metering.config import settings
from metering.customer_clocks import GUARD_SK
from metering.keys import key
from metering.meters import name_key

_local = threading.local()
ALERTS_ALL, ALERTS_BY_CUSTOMER = 1, 2


def alert_flags(claim: dict | None) -> int:
    """Which kinds of alerts a meter's name claim counts: ALERTS_ALL | ALERTS_BY_CUSTOMER."""
    if not claim:
        return 0
    return (ALERTS_ALL if int(claim.get("al_all") or 0) > 0 else 0) | (
        ALERTS_BY_CUSTOMER if int(claim.get("al_cus") or 0) > 0 else 0
    )


def _meter_of(claim: dict | None) -> dict | None:
    """The ingest view a claim carries, with its alert flags when the meter has alerts."""
    meter = claim.get("meter") if claim else None
    if meter is not None and alert_flags(claim):
        meter = {**meter, "alerts": alert_flags(claim)}
    return meter


def by_event_name(scope: str, event_name: str) -> dict | None:
    """The meter claiming `event_name` in a scope (active or not), or None."""
    memo = getattr(_local, "memo", None)
    if memo is not None and (scope, event_name) in memo:
        return memo[(scope, event_name)]
    claim = store.get(settings().main_table, key("ACCT", scope), name_key(event_name), consistent=True)
    meter = _meter_of(claim)
    if memo is not None:
        memo[(scope, event_name)] = meter
    return meter


def for_event(scope: str, event_name: str, livemode: bool) -> tuple[dict | None, bool]:
    """The meter claiming `event_name`, and whether the scope has customers on test clocks
    (test mode only), in one strongly consistent request."""
    if livemode:
        return by_event_name(scope, event_name), False
    memo = getattr(_local, "memo", None)
    if memo is not None and (scope, event_name, GUARD_SK) in memo:
        return memo[(scope, event_name)], memo[(scope, event_name, GUARD_SK)]
    pk = key("ACCT", scope)
    found = store.batch_get(
        settings().main_table, [(pk, name_key(event_name)), (pk, GUARD_SK)], consistent=True
    )
    claim = found.get((pk, name_key(event_name)))
    meter, clocks = _meter_of(claim), (pk, GUARD_SK) in found
    if memo is not None:
        memo[(scope, event_name)], memo[(scope, event_name, GUARD_SK)] = meter, clocks
    return meter, clocks


@contextmanager
def batch():
    """Look each event name up once for the events of one batch."""
    previous = getattr(_local, "memo", None)
    _local.memo = {}
    try:
        yield
    finally:
        _local.memo = previous
