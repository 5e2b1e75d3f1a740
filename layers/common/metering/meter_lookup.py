"""Meter by event name, cached in the warm Lambda for a few seconds at most."""

import time

from metering import store
from metering.config import settings
from metering.keys import key
from metering.meters import METER_PREFIX, name_key

_cache: dict[tuple[str, str], tuple[float, dict | None]] = {}


def by_event_name(account_id: str, event_name: str) -> dict | None:
    """The stored meter claiming `event_name` (active or not), or None."""
    now = time.monotonic()
    hit = _cache.get((account_id, event_name))
    if hit and hit[0] > now:
        return hit[1]
    table, pk = settings().main_table, key("ACCT", account_id)
    claim = store.get(table, pk, name_key(event_name))
    meter = store.get(table, pk, METER_PREFIX + claim["meter_id"]) if claim else None
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[(account_id, event_name)] = (now + settings().meter_cache_seconds, meter)
    return meter


def forget() -> None:
    _cache.clear()
