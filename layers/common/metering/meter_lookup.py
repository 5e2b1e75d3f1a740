"""Meter by event name: one strongly consistent read, never cached across requests.

The event-name claim item carries the meter's ingest configuration (id, formula, payload
keys, window, status) and is written in the same transaction as the meter on create,
deactivate and reactivate, so one consistent GetItem sees every lifecycle change at once:
an event sent right after its meter was created, deactivated or reactivated is judged by
the meter as it is now. Within one batch (a stream request, a bulk batch) `batch()`
memoises lookups, so a name is read once per batch, never remembered after it.
"""

import threading
from contextlib import contextmanager

from metering import store
from metering.config import settings
from metering.keys import key
from metering.meters import name_key

_local = threading.local()


def by_event_name(scope: str, event_name: str) -> dict | None:
    """The meter claiming `event_name` in a scope (active or not), or None."""
    memo = getattr(_local, "memo", None)
    if memo is not None and (scope, event_name) in memo:
        return memo[(scope, event_name)]
    claim = store.get(settings().main_table, key("ACCT", scope), name_key(event_name), consistent=True)
    meter = claim.get("meter") if claim else None
    if memo is not None:
        memo[(scope, event_name)] = meter
    return meter


@contextmanager
def batch():
    """Look each event name up once for the events of one batch."""
    previous = getattr(_local, "memo", None)
    _local.memo = {}
    try:
        yield
    finally:
        _local.memo = previous
