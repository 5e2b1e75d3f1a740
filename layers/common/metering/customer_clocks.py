"""Customers on test clocks, for meter event validation (written by billing).

A customer attached to a billing test clock lives on the clock's frozen time: its meter
event timestamps are checked against that time instead of the real clock. Billing
maintains two kinds of items in the main table, partition `ACCT#<scope>`:

- `CUSCLOCK#<customer>`: `{clock, frozen_time}` for each customer on a clock, updated
  when the clock advances;
- `CLOCKS`: present once any customer of the scope has been put on a clock.

`frozen_time()` costs nothing in live mode (clocks are test mode only). In test mode the
guard is read in the same request as the meter (`meter_lookup.for_event`: one strongly
consistent BatchGetItem of the event-name claim and the guard, never cached), so a scope
that never used test clocks costs no extra request per event and a clock attached a
moment ago is seen by the next event; only a scope with clocked customers reads the
customer's item (strongly consistent: an advance is seen at once).
"""

from metering import store
from metering.config import settings
from metering.keys import key, part

GUARD_SK = "CLOCKS"


def _pk(scope: str) -> str:
    return key("ACCT", scope)


def customer_sk(customer: str) -> str:
    return key("CUSCLOCK", part(customer))


def customer_item(scope: str, customer: str, clock_id: str, frozen_time: int) -> dict:
    """The item billing writes when a customer joins a clock and when the clock moves."""
    return {
        "pk": _pk(scope),
        "sk": customer_sk(customer),
        "clock": clock_id,
        "frozen_time": int(frozen_time),
    }


def guard_item(scope: str) -> dict:
    return {"pk": _pk(scope), "sk": GUARD_SK}


def frozen_time(scope: str, livemode: bool, customer: str, has_clocks: bool | None = None) -> int | None:
    """The frozen time of the test clock `customer` is attached to, or None (real time).

    `has_clocks` is the guard as read with the meter; None reads it here."""
    if livemode:
        return None
    if has_clocks is None:
        has_clocks = store.get(settings().main_table, _pk(scope), GUARD_SK, consistent=True) is not None
    if not has_clocks:
        return None
    item = store.get(settings().main_table, _pk(scope), customer_sk(customer), consistent=True)
    return int(item["frozen_time"]) if item else None
