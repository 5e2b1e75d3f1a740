"""Test clocks: `/v1/test_helpers/test_clocks` (test mode only).

A clock holds a frozen time. Customers join one at creation; their subscriptions and
invoices then live on the clock's time: periods end and drafts finalize only when the
clock is advanced past them. An advance marks the clock `advancing`, runs every due
boundary of the clock in time order (period ends, then finalizations, see `cycles`),
and sets the clock `ready` at the target time. The boundaries of a clock have their own
partition in the `due` index, so they never run on real time.
"""

import time
from functools import cache
from typing import Annotated, Any

from billing import events, storage
from billing.params import check_cursors
from metering import clock, store, wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid, not_found

PREFIX = "CLK#"
MAX_CUSTOMERS = 3
DELETES_AFTER_SECONDS = 30 * 86400
NO_SUBSCRIPTION_LIMIT = 2 * 366 * 86400  # "not more than two years" without subscriptions


@cache
def _models() -> dict[str, Any]:
    """The request models, defined on first use: pydantic is imported only by a function that
    validates a request."""
    from pydantic import Field

    from billing.params import Expand, Strict

    class ClockCreate(Strict):
        frozen_time: int
        name: Annotated[str, Field(max_length=300)] | None = None
        expand: Expand = None

    class ClockAdvance(Strict):
        frozen_time: int
        expand: Expand = None

    return {"ClockCreate": ClockCreate, "ClockAdvance": ClockAdvance}


_MODEL_NAMES = (
    "ClockCreate",
    "ClockAdvance",
)
__getattr__ = wire.lazy_models(__name__, _models, _MODEL_NAMES)


def sk(clock_id: str) -> str:
    return PREFIX + clock_id


def to_object(item: dict) -> dict:
    if item.get("deleted"):
        return {"id": item["id"], "object": "test_helpers.test_clock", "deleted": True}
    advancing = item["status"] == "advancing"
    return {
        "id": item["id"],
        "object": "test_helpers.test_clock",
        "created": int(item["created"]),
        "deletes_after": int(item["deletes_after"]),
        "frozen_time": int(item["frozen_time"]),
        "livemode": False,
        "name": item.get("name"),
        "status": item["status"],
        "status_details": ({"advancing": {"target_frozen_time": int(item["target"])}} if advancing else {}),
    }


def _test_mode_only(who: Principal) -> None:
    if who.livemode:
        raise invalid("Test clocks are only available in test mode; use a test mode key (sk_test_...).")


def load(who: Principal, clock_id: str, param: str = "id") -> dict:
    item = storage.find(who.scope, sk, clock_id)
    if item is None or item.get("deleted"):
        raise not_found(f"No such test clock: '{clock_id}'", param)
    return item


def current_time(who: Principal, clock_id: str | None) -> int:
    """Now for an object: its test clock's frozen time, or the real clock."""
    if clock_id is None:
        return int(clock.now())
    return int(load(who, clock_id)["frozen_time"])


def create(who: Principal, params: dict) -> dict:
    _test_mode_only(who)
    spec = wire.validate(_models()["ClockCreate"], params)
    now = int(time.time())
    from metering.ids import new_id

    clock_id = new_id("clock")
    item = {
        "pk": storage.scope_pk(who.scope),
        "sk": sk(clock_id),
        "id": clock_id,
        "account_id": who.account_id,
        "livemode": False,
        "created": now,
        "deletes_after": now + DELETES_AFTER_SECONDS,
        "frozen_time": spec.frozen_time,
        "name": spec.name,
        "status": "ready",
        "customers": 0,
        "ver": 1,
    }
    pending = events.for_principal(who)
    obj = to_object(item)
    storage.transact([storage.put_new(item), pending.add("test_helpers.test_clock.created", obj)])
    pending.publish()
    return obj


def retrieve(who: Principal, clock_id: str, params: dict) -> dict:
    _test_mode_only(who)
    wire.reject_unknown(params, {"expand"})
    return to_object(load(who, clock_id))


def list_clocks(who: Principal, params: dict) -> dict:
    _test_mode_only(who)
    from billing.params import ListParams

    spec = wire.validate(ListParams, params)
    check_cursors(spec)
    items, has_more = storage.page_of(who.scope, PREFIX, spec, lambda item: not item.get("deleted"))
    return wire.list_object("/v1/test_helpers/test_clocks", [to_object(i) for i in items], has_more)


def joinable(who: Principal, clock_id: str) -> dict:
    """The clock a new customer may join (test mode, exists, fewer than 3 customers)."""
    if who.livemode:
        raise invalid("Test clocks are only available in test mode.", "test_clock")
    item = load(who, clock_id, param="test_clock")
    if int(item.get("customers") or 0) >= MAX_CUSTOMERS:
        raise invalid(f"A test clock can have at most {MAX_CUSTOMERS} customers.", "test_clock")
    return item


def join_operation(who: Principal, item: dict) -> dict:
    """Transaction step: count one more customer on the clock, if it did not change."""
    return storage.put(
        {**item, "customers": int(item.get("customers") or 0) + 1, "ver": int(item["ver"]) + 1},
        "ver = :ver",
        {":ver": item["ver"]},
    )


def delete(who: Principal, clock_id: str, params: dict) -> dict:
    """Delete the clock, its customers (their subscriptions are cancelled first)."""
    from billing import customers

    _test_mode_only(who)
    wire.reject_unknown(params, set())
    item = load(who, clock_id)
    for customer in storage.children(storage.parent_key(who.scope, "CLK", clock_id), customers.PREFIX):
        if not customer.get("deleted"):
            try:
                customers.delete(who, customer["id"], {})
            except StripeError as exc:
                if exc.status != 404:
                    raise
    for _ in range(5):
        item = load(who, clock_id)
        gone = {**item, "deleted": True, "status": "ready", "ver": int(item["ver"]) + 1}
        for name in ("dpk", "dsk"):
            gone.pop(name, None)
        pending = events.for_principal(who)
        try:
            storage.transact(
                [
                    storage.put(gone, "ver = :ver", {":ver": item["ver"]}),
                    pending.add("test_helpers.test_clock.deleted", to_object(item)),
                ]
            )
        except storage.Conflict:
            continue
        pending.publish()
        return {"id": clock_id, "object": "test_helpers.test_clock", "deleted": True}
    raise storage.busy("test clock")


def _live_subscriptions(who: Principal, clock_id: str) -> list[dict]:
    from billing import customers, subscriptions

    live = []
    for customer in storage.children(storage.parent_key(who.scope, "CLK", clock_id), customers.PREFIX):
        if not customer.get("deleted"):
            live += subscriptions.live_of_customer(who, customer)
    return live


def _advance_limit(who: Principal, clock_id: str, frozen: int) -> int:
    """Two intervals of the shortest live subscription on the clock, else two years."""
    from billing import periods

    limits = [
        periods.boundary(frozen, s["interval"], int(s["interval_count"]), 2)
        for s in _live_subscriptions(who, clock_id)
    ]
    return min(limits) if limits else frozen + NO_SUBSCRIPTION_LIMIT


def advance(who: Principal, clock_id: str, params: dict) -> dict:
    """Mark the clock `advancing`, run its boundaries up to the target, make it `ready`."""
    from billing import cycles

    _test_mode_only(who)
    spec = wire.validate(_models()["ClockAdvance"], params)
    for _ in range(5):
        item = load(who, clock_id)
        if item["status"] == "advancing":
            raise invalid(
                "The test clock is already advancing; wait until its status is ready.",
                "frozen_time",
                "test_clock_advancing",
            )
        frozen = int(item["frozen_time"])
        if spec.frozen_time <= frozen:
            raise invalid(
                f"The test clock can only move forward: frozen_time must be after {frozen}.", "frozen_time"
            )
        limit = _advance_limit(who, clock_id, frozen)
        if spec.frozen_time > limit:
            raise invalid(
                "Cannot advance more than two intervals of the shortest subscription on this test clock "
                f"(or two years without subscriptions): frozen_time must be at most {limit}.",
                "frozen_time",
            )
        requested = int(clock.now())
        moving = {
            **item,
            "status": "advancing",
            "target": spec.frozen_time,
            "advance_requested_at": requested,
            "dpk": storage.shard_of(clock_id),  # the scheduler resumes an advance cut short
            "dsk": storage.due_sort(requested, storage.ADVANCE, clock_id),
        }
        pending = events.for_principal(who)
        try:
            storage.transact(
                [
                    storage.put_versioned(moving, int(item["ver"])),
                    pending.add("test_helpers.test_clock.advancing", to_object(moving)),
                ]
            )
        except storage.Conflict:
            continue
        pending.publish()
        break
    else:
        raise storage.busy("test clock")
    return to_object(cycles.advance_clock(who, clock_id))


def finish_advance(who: Principal, clock_id: str, target: int) -> dict:
    """Every boundary up to the target ran: the clock is `ready` at the target, and its
    customers' meter events are checked against the new frozen time."""
    from billing import customers
    from metering import customer_clocks
    from metering.config import settings

    clocked = [
        c
        for c in storage.children(storage.parent_key(who.scope, "CLK", clock_id), customers.PREFIX)
        if not c.get("deleted")
    ]
    for _ in range(5):
        item = load(who, clock_id)
        if item["status"] != "advancing" or int(item["target"]) != target:
            return item
        ready = {k: v for k, v in item.items() if k not in ("dpk", "dsk", "target", "advance_requested_at")}
        ready.update(status="ready", frozen_time=target)
        pending = events.for_principal(who)
        main = settings().main_table
        steps = [
            storage.put_versioned(ready, int(item["ver"])),
            *[
                {
                    "Put": {
                        "TableName": main,
                        "Item": store.to_item(
                            customer_clocks.customer_item(who.scope, c["id"], clock_id, target)
                        ),
                    }
                }
                for c in clocked
            ],
            pending.add("test_helpers.test_clock.ready", to_object(ready)),
        ]
        try:
            storage.transact(steps)
        except storage.Conflict:
            continue
        pending.publish()
        return {**ready, "ver": int(item["ver"]) + 1}
    raise storage.busy("test clock")
