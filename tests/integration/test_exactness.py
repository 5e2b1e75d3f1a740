"""Invariant 1, property-based: whatever happens, every summary equals the stored events.

Hypothesis draws sequences of meter events (sum, count and last; raw and pre-aggregated;
negative values, duplicate identifiers, out-of-order timestamps, customer ids and
identifiers of 100 four-byte characters with `#` and `%` in them), cancellations, v2
stream requests whose writes fail (before writing, or after writing with the answer lost;
the client retries a request that fails, as the SDK does), and stream deliveries with
faults: a batch that fails before or after its writes, a batch
delivered twice, a batch that reports a failed record midway (Lambda then retries from
it) with or without having applied the rest. The oracle recomputes every summary from
the events table itself (raw events and pre-aggregation slots that still count).
"""

import threading
import uuid
from collections import defaultdict
from decimal import Decimal

import boto3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering import adjustments, aggregate, ingest, meters, summaries
from metering.accounts import Principal
from metering.errors import StripeError
from metering.store import from_item
from tests.integration.test_aggregate import BASE, DAY, HOUR
from tests.streams import stream_pump

METERS = [
    ("sum", None),
    ("count", None),
    ("last", None),
    ("sum", "hour"),
    ("last", "day"),
]
WIDE = "\U0001d518"  # 4 bytes of UTF-8
CUSTOMERS = ["cus_a", "cus_a#b", "cus_ü", (WIDE * 98 + "#%")[:100]]
FAULTS = ["ok", "raise_before", "raise_after", "twice", "partial", "partial_applied"]
RANGE = (BASE, BASE + 3 * DAY)

send = st.tuples(
    st.just("send"),
    st.integers(0, len(METERS) - 1),
    st.sampled_from(CUSTOMERS),
    st.integers(0, 2 * DAY - 1),  # timestamps in any order, often sharing windows
    st.decimals(min_value=-50, max_value=100, places=2, allow_nan=False, allow_infinity=False),
    st.integers(0, 40),  # identifier: small pool, so duplicates happen
)
cancel = st.tuples(st.just("cancel"), st.integers(0, len(METERS) - 1), st.integers(0, 40))
settle = st.tuples(st.just("settle"))
stream_event = st.tuples(
    st.integers(0, len(METERS) - 1),
    st.sampled_from(CUSTOMERS),
    st.integers(0, 2 * DAY - 1),
    st.decimals(min_value=-50, max_value=100, places=2, allow_nan=False, allow_infinity=False),
    st.integers(0, 5),  # write failures before it is stored (the store retries 3 times)
    st.booleans(),  # True: the first failing write happened, only its answer was lost
)
stream = st.tuples(st.just("stream"), st.lists(stream_event, min_size=1, max_size=5))
steps = st.lists(st.one_of(send, send, send, cancel, settle, stream), min_size=1, max_size=40)
faults = st.lists(st.sampled_from(FAULTS), max_size=30)


def faulty(plan: list[str]):
    """The aggregate function as Lambda may run it: failing, repeating, half-applying."""
    kinds = iter(plan)

    def invoke(event):
        records = event["Records"]
        kind = next(kinds, "ok")
        middle = len(records) // 2
        failed_midway = {
            "batchItemFailures": [{"itemIdentifier": records[middle]["dynamodb"]["SequenceNumber"]}]
        }
        if kind == "raise_before":
            raise RuntimeError("injected: failed before writing")
        if kind == "partial" and middle:
            aggregate.handle_batch(records[:middle])  # the first half only; Lambda retries from the middle
            return failed_midway
        result = aggregate.handle_batch(records)
        if kind == "raise_after":
            raise RuntimeError("injected: failed after writing")
        if kind == "twice":
            return aggregate.handle_batch(records)
        if kind == "partial_applied" and middle and not result["batchItemFailures"]:
            return failed_midway  # all applied, yet Lambda redelivers from the middle
        return result

    return invoke


def identifier(n: int) -> str:
    """Short identifiers, and some of 100 four-byte characters with separators in them."""
    return f"id{n}" if n % 3 else (WIDE * 97 + "#%")[: 100 - len(str(n))] + str(n)


class WriteFaults:
    """event_store.record failing for chosen stream events: before writing, or after."""

    def __init__(self, monkeypatch):
        from metering import event_store

        self.plan: dict[str, list] = {}
        self.real = event_store.record
        monkeypatch.setattr(event_store, "record", self.record)
        monkeypatch.setattr(ingest, "BACKOFF_SECONDS", 0)

    def record(self, event, source=None, fingerprint=None):
        from botocore.exceptions import ClientError

        plan = self.plan.get(event.payload.get("n"))
        if plan and plan[0] > 0:
            plan[0] -= 1
            if plan[1]:
                plan[1] = False
                self.real(event, source, fingerprint)
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "injected"}}, "PutItem")
        return self.real(event, source, fingerprint)


def send_stream(who, faults: WriteFaults, events: list, marker: str) -> dict[str, str]:
    """One stream request, retried by the client while it fails; marker -> event name."""
    body, sent = [], {}
    for k, (index, customer, offset, value, failures, written) in enumerate(events):
        n = f"{marker}.{k}"
        faults.plan[n] = [failures, written]
        payload = {"stripe_customer_id": customer, "value": str(value), "n": n}
        body.append({"event_name": f"e{index}", "payload": payload, "timestamp": rfc3339(BASE + offset)})
        sent[n] = f"e{index}"
    for _ in range(3):
        try:
            ingest.stream(who, {"events": body})
            return sent
        except StripeError as exc:
            assert exc.status in (429, 500)
    raise AssertionError("the stream request kept failing")


def rfc3339(ts: int) -> str:
    from metering.notifications import rfc3339 as fmt

    return fmt(ts)


def stream_copies(items: list[dict]) -> dict[str, int]:
    """How many stored events (raw or pre-aggregated) each stream event marker has."""
    copies: dict[str, int] = defaultdict(int)
    for item in items:
        if item["t"] in ("raw", "pre") and "n" in item["payload"]:
            copies[item["payload"]["n"]] += 1
    return copies


def reported_lost(scope: str) -> int:
    """How many stream events were reported as not stored (error code internal_error)."""
    from metering import notifications

    lost = 0
    for event in notifications.list_events(scope, 100, None)[0]:
        for error_type in ((event.get("data") or {}).get("reason") or {}).get("error_types", []):
            if error_type["code"] == "internal_error":
                lost += error_type["error_count"]
    return lost


def stored_items(aws, scope: str) -> list[dict]:
    """The events table's items of one scope (one scan)."""
    scan = boto3.client("dynamodb").get_paginator("scan")
    items = (
        from_item(i) for page in scan.paginate(TableName=aws.tables["EventsTable"]) for i in page["Items"]
    )
    return [item for item in items if item["scope"] == scope]


def oracle(aws, scope: str, items: list[dict] | None = None) -> dict:
    """(meter id, customer) -> [(ts, seq, value)] of the stored events that count."""
    counted = defaultdict(list)
    for item in stored_items(aws, scope) if items is None else items:
        if item["t"] in ("raw", "slot") and item["st"] == "ok":
            value = Decimal(item["v"]) if item.get("v") is not None else Decimal(0)
            counted[(item["mid"], item["cust"])].append((int(item["ts"]), item["seq"], value))
    return counted


def expected(formula: str, events: list) -> Decimal | int:
    if formula == "count":
        return len(events)
    if formula == "last":
        return max(events)[2] if events else Decimal(0)
    return sum((e[2] for e in events), Decimal(0))


def grouped(who, meter_id, customer, window) -> list:
    params = {
        "customer": customer,
        "start_time": str(RANGE[0]),
        "end_time": str(RANGE[1]),
        "value_grouping_window": window,
        "limit": "100",
    }
    return summaries.list_summaries(who, meter_id, params)["data"]


def check_summaries(aws, who, created, items: list[dict] | None = None) -> None:
    truth = oracle(aws, who.scope, items)
    for (formula, _), m in zip(METERS, created, strict=True):
        for customer in CUSTOMERS:
            events = truth.get((m["id"], customer), [])
            params = {"customer": customer, "start_time": str(RANGE[0]), "end_time": str(RANGE[1])}
            (whole,) = summaries.list_summaries(who, m["id"], params)["data"]
            assert whole["aggregated_value"] == expected(formula, events), (formula, customer)
            for window, size in (("hour", HOUR), ("day", DAY)):
                by_window = defaultdict(list)
                for e in events:
                    by_window[e[0] - e[0] % size].append(e)
                want = [
                    (start, expected(formula, by_window[start])) for start in sorted(by_window, reverse=True)
                ]
                got = [
                    (s["start_time"], s["aggregated_value"]) for s in grouped(who, m["id"], customer, window)
                ]
                assert got == want, (formula, customer, window)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, plan=faults)
def test_summaries_equal_the_stored_events_under_any_delivery(aws, monkeypatch, steps, plan):
    who = Principal(f"acct_{uuid.uuid4().hex[:12]}", False)
    write_faults = WriteFaults(monkeypatch)
    streamed: dict[str, str] = {}
    created = [
        meters.create(
            who,
            {
                "display_name": f"m{i}",
                "event_name": f"e{i}",
                "default_aggregation": {"formula": formula},
                **({"event_time_window": window} if window else {}),
            },
        )
        for i, (formula, window) in enumerate(METERS)
    ]
    pump = stream_pump(aws, faulty(plan))
    for step in steps:
        if step[0] == "send":
            _, index, customer, offset, value, ident = step
            payload = {"stripe_customer_id": customer, "value": str(value)}
            params = {
                "event_name": f"e{index}",
                "timestamp": str(BASE + offset),
                "identifier": identifier(ident),
            }
            try:
                ingest.create_v1(who, {**params, "payload": payload})
            except StripeError as exc:
                assert exc.code == "duplicate_identifier"
        elif step[0] == "cancel":
            _, index, ident = step
            try:
                adjustments.create_v1(
                    who, {"event_name": f"e{index}", "cancel": {"identifier": identifier(ident)}}
                )
            except StripeError as exc:
                assert exc.param in ("cancel[identifier]", "event_name")
        elif step[0] == "stream":
            streamed |= send_stream(who, write_faults, step[1], f"s{len(streamed)}")
        else:
            pump.settle()
    pump.settle()
    items = stored_items(aws, who.scope)
    check_summaries(aws, who, created, items)
    copies, lost = stream_copies(items), reported_lost(who.scope)
    assert all(copies.get(n, 0) <= 1 for n in streamed)  # never stored twice
    assert sum(copies.get(n, 0) for n in streamed) == len(streamed) - lost  # missing ones were reported


def test_concurrent_shards_on_the_same_buckets_stay_exact(aws):
    """Two consumers (as two shards would) apply interleaved records to the same buckets."""
    who = Principal("acct_shards", False)
    m = meters.create(
        who, {"display_name": "m", "event_name": "e", "default_aggregation": {"formula": "last"}}
    )
    for i in range(120):
        payload = {"stripe_customer_id": "cus_a", "value": str(i % 7)}
        ingest.create_v1(
            who,
            {"event_name": "e", "timestamp": str(BASE + i * 37), "identifier": f"i{i}", "payload": payload},
        )
    for i in range(0, 120, 3):
        adjustments.create_v1(who, {"event_name": "e", "cancel": {"identifier": f"i{i}"}})
    records = []
    pump = stream_pump(aws, lambda event: records.extend(event["Records"]) or {"batchItemFailures": []})
    pump.settle()
    by_item = defaultdict(list)
    for r in records:
        by_item[r["dynamodb"]["Keys"]["pk"]["S"]].append(r)
    shards: list[list] = [[], []]  # an item's changes stay in order within one shard, as in DynamoDB
    for n, changes in enumerate(by_item.values()):
        shards[n % 2].extend(changes)

    def run(shard, shard_id):
        for start in range(0, len(shard), 10):
            batch = shard[start : start + 10]
            assert aggregate.handle_batch(batch, shard_id) == {"batchItemFailures": []}

    threads = [threading.Thread(target=run, args=(s, f"shard-{n}")) for n, s in enumerate(shards)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = oracle(aws, who.scope)[(m["id"], "cus_a")]
    params = {
        "customer": "cus_a",
        "start_time": str(RANGE[0]),
        "end_time": str(RANGE[1]),
        "value_grouping_window": "hour",
        "limit": "100",
    }
    got = [
        (s["start_time"], s["aggregated_value"])
        for s in summaries.list_summaries(who, m["id"], params)["data"]
    ]
    by_window = defaultdict(list)
    for e in events:
        by_window[e[0] - e[0] % HOUR].append(e)
    assert got == [(s, expected("last", by_window[s])) for s in sorted(by_window, reverse=True)]
    assert all(shards)
