"""Period close and automatic finalization: the work found in the `due` index.

Two kinds of boundaries, run by the scheduled function (real time, per shard) and by
test clock advances (the clock's own partition, in time order):

- a subscription's period end: one transaction creates the cycle invoice (a draft with
  one line per metered item, finalizing at created + grace) together with its claim
  `INCLAIM#<subscription>#<period start>` (conditional put: one invoice per period,
  however often or concurrently the close runs) and rolls the period forward
  (conditional on the period start it read). With `cancel_at_period_end` the
  subscription ends instead, and that last invoice waits for a manual finalization
  (`auto_advance: false`, as Stripe does).
- a draft's `automatically_finalizes_at`: `invoices.finalize` (conditional on the draft
  version; lines recomputed once from every event received so far, then frozen).

A crash anywhere leaves either nothing or the whole step written; the next run finds
the same entry still due, or the step done, and never writes it twice.
"""

import heapq
import json
import os
import time
from collections.abc import Callable

from billing import (
    account_settings,
    customers,
    edges,
    events,
    invoice_lines,
    invoices,
    periods,
    storage,
    subscriptions,
    test_clocks,
)
from metering import aws, clock
from metering.accounts import Principal
from metering.observability import logger

BATCH = 25
LOW_TIME_MS = 20_000


def principal_of(item: dict) -> Principal:
    return Principal(item["account_id"], bool(item["livemode"]))


def period_invoice(
    who: Principal,
    subscription: dict,
    start: int,
    end: int,
    *,
    created: int,
    reason: str,
    pending: events.Pending,
    auto_advance: bool = True,
    grace_cap: int | None = None,
) -> tuple[dict, list[dict]]:
    """The draft invoice of [start, end) and the steps storing it with its claim and event."""
    lines = invoice_lines.compute(who, subscription, start, end)
    grace = account_settings.grace_seconds(who.scope)
    if grace_cap is not None:
        grace = min(grace, grace_cap)
    invoice = invoices.new_item(
        who,
        subscription,
        reason=reason,
        start=start,
        end=end,
        created=created,
        lines=lines,
        auto_advance=auto_advance,
        finalizes_at=created + grace if auto_advance else None,
    )
    claim = {
        "pk": invoice["pk"],
        "sk": invoices.claim_sk(subscription["id"], start),
        "invoice": invoice["id"],
    }
    steps = [
        storage.put_new(claim),
        storage.put_new(invoice),
        pending.add("invoice.created", invoices.to_object(invoice)),
    ]
    return invoice, steps


def close_period(who: Principal, subscription_id: str, at: int) -> list[tuple[int, str, str, str]]:
    """Close the subscription's current period if it ended by `at`.

    Returns the due entries the close created ((time, kind, id, sort key)) so a test clock advance
    can run them in order without waiting for the index."""
    for _ in range(8):
        subscription = subscriptions.load(who, subscription_id)
        start, end = int(subscription["period_start"]), int(subscription["period_end"])
        if subscription["status"] == "canceled" or end > at:
            return []
        final = bool(subscription.get("cancel_at_period_end"))
        before = subscriptions.to_object(who, subscription)
        pending = events.for_principal(who)
        rolled = dict(subscription)
        next_end = None
        if final:
            rolled.update(status="canceled", canceled_at=end, ended_at=end, cancel_at=None)
            rolled["cancellation_details"] = {"reason": "cancellation_requested"}
        else:
            next_end = periods.next_boundary(
                int(subscription["billing_cycle_anchor"]),
                subscription["interval"],
                int(subscription["interval_count"]),
                end,
            )
            rolled.update(period_start=end, period_end=next_end)
        invoice, steps = period_invoice(
            who,
            subscription,
            start,
            end,
            created=at,
            reason="subscription_cycle",
            pending=pending,
            auto_advance=not final,
            grace_cap=(next_end - end) if next_end else None,
        )
        rolled["latest_invoice"] = invoice["id"]
        rolled = subscriptions.due_entry(who, rolled)
        if next_end is not None:
            steps += edges.steps_for_period(who, rolled, end, next_end)
        after = subscriptions.to_object(who, rolled)
        steps.append(
            storage.put(
                {**rolled, "ver": int(subscription["ver"]) + 1},
                "ver = :ver AND period_start = :ps AND #s = :active",
                {":ver": subscription["ver"], ":ps": start, ":active": "active"},
                {"#s": "status"},
            )
        )
        if final:
            customer = customers.load(who, subscription["customer"], allow_deleted=True)
            steps.append(
                customers.replace(customer, customers.with_subscriptions(customer, -1), allow_deleted=True)
            )
            steps.append(pending.add("customer.subscription.deleted", after))
        else:
            steps.append(pending.add("customer.subscription.updated", after, events.changed(before, after)))
        try:
            storage.transact(steps)
        except storage.Conflict:
            continue  # another run closed it, or the subscription changed: look again
        pending.publish()
        created = []
        if invoice.get("automatically_finalizes_at") is not None:
            due = int(invoice["automatically_finalizes_at"])
            created.append((due, storage.FINALIZE, invoice["id"], invoice["sk"]))
        if next_end is not None:
            created.append((next_end, storage.CLOSE, subscription_id, rolled["sk"]))
            if edges.needed(end, next_end):
                edge_at = end + edges.SNAPSHOT_AFTER
                created.append((edge_at, storage.EDGE, subscription_id, edges.sk(subscription_id, end)))
        return created
    raise storage.busy("subscription")


def finalize_due(who: Principal, invoice_id: str, at: int) -> list[tuple[int, str, str, str]]:
    item = invoices.load(who, invoice_id)
    due = item.get("automatically_finalizes_at")
    if item["status"] != "draft" or not item.get("auto_advance") or due is None or int(due) > at:
        return []
    invoices.finalize(who, invoice_id, at=at)
    return []


def _current_due(item: dict) -> tuple[int, str] | None:
    """When and what the document is due for now (read consistently), if anything."""
    if item["sk"].startswith(subscriptions.PREFIX):
        if item["status"] == "canceled":
            return None
        return int(item["period_end"]), storage.CLOSE
    if item["sk"].startswith(invoices.PREFIX):
        if (
            item["status"] != "draft"
            or not item.get("auto_advance")
            or item.get("automatically_finalizes_at") is None
        ):
            return None
        return int(item["automatically_finalizes_at"]), storage.FINALIZE
    if item["sk"].startswith(test_clocks.PREFIX):
        if item.get("deleted") or item["status"] != "advancing":
            return None
        return int(item.get("advance_requested_at") or 0), storage.ADVANCE
    if item["sk"].startswith(edges.PREFIX):
        return None if item.get("taken") is not None else (int(item["due_at"]), storage.EDGE)
    return None


def run_step(item: dict, at: int) -> list[tuple[int, str, str, str]]:
    """Run what a document is due for at `at`; returns new due entries it created."""
    who = principal_of(item)
    if item["sk"].startswith(subscriptions.PREFIX):
        return close_period(who, item["id"], at)
    if item["sk"].startswith(invoices.PREFIX):
        return finalize_due(who, item["id"], at)
    if item["sk"].startswith(test_clocks.PREFIX):
        advance_clock(who, item["id"])
    if item["sk"].startswith(edges.PREFIX):
        edges.take(who, item, subscriptions.load(who, item["subscription"]))
    return []


def run_shard(shard: str, deadline: Callable[[], bool]) -> bool:
    """Run the real-time boundaries due in one shard; True when work remains (out of time)."""
    done: set[tuple[str, str, str]] = set()  # entries tried in this run (a failing one waits for the next)
    while True:
        now = int(clock.now())
        keys = [
            k for k in storage.due_keys(shard, now, limit=BATCH) if (k["pk"], k["sk"], k["dsk"]) not in done
        ]
        if not keys:
            return False
        for k in keys:
            if deadline():
                return True
            done.add((k["pk"], k["sk"], k["dsk"]))
            item = storage.get_key(k["pk"], k["sk"])
            due = _current_due(item) if item else None
            if due is None or due[0] > now:
                continue  # the index lagged behind a change: nothing to do
            try:
                run_step(item, now)
            except Exception:
                logger.exception("billing boundary failed", extra={"pk": k["pk"], "sk": k["sk"]})


def handle(event: dict, remaining_ms: Callable[[], int], function_arn: str | None = None) -> dict:
    """The scheduled function: every shard (or the ones a continuation names), within the
    invocation's time. Each shard left with due work continues in its own invocation (in
    AWS an asynchronous self-invoke, so busy shards run in parallel; locally the schedule
    trigger follows the returned `continuations`)."""
    shards = event.get("shards") or storage.shards()

    def out_of_time() -> bool:
        return remaining_ms() < LOW_TIME_MS

    remaining = [shard for shard in shards if out_of_time() or run_shard(shard, out_of_time)]
    continuations = [{"shards": [shard]} for shard in remaining]
    if continuations and function_arn and os.environ.get("METERING_LOCAL") != "1":
        for follow_up in continuations:
            aws.lambda_().invoke(
                FunctionName=function_arn, InvocationType="Event", Payload=json.dumps(follow_up)
            )
        return {"continuations": []}
    return {"continuations": continuations}


# --- test clocks -----------------------------------------------------------------------


def advance_clock(who: Principal, clock_id: str, budget_seconds: float = 20.0) -> dict:
    """Run the clock's boundaries up to its target in time order (period ends before
    finalizations at the same second), then make it `ready` at the target."""
    started = time.monotonic()
    item = test_clocks.load(who, clock_id)
    if item["status"] != "advancing":
        return item
    target = int(item["target"])
    partition = storage.clock_partition(who.scope, clock_id)
    heap: list[tuple[int, str, str, str]] = []
    seen: set[tuple[int, str, str]] = set()

    def push(at: int, kind: str, object_id: str, sk: str) -> None:
        if at <= target and (at, kind, object_id) not in seen:
            seen.add((at, kind, object_id))
            heapq.heappush(heap, (at, kind, object_id, sk))

    for k in storage.due_keys(partition, target):
        at_text, kind, object_id = k["dsk"].split("#", 2)
        push(int(at_text), kind, object_id, k["sk"])
    while heap:
        if time.monotonic() - started > budget_seconds:
            return test_clocks.load(who, clock_id)  # still advancing: the scheduler resumes it
        at, kind, object_id, sk = heapq.heappop(heap)
        doc = storage.get(who.scope, sk)
        due = _current_due(doc) if doc else None
        if due is None:
            continue
        if due != (at, kind):
            push(due[0], due[1], object_id, sk)
            continue
        for new_at, new_kind, new_id, new_sk in run_step(doc, at):
            push(new_at, new_kind, new_id, new_sk)
    return test_clocks.finish_advance(who, clock_id, target)
