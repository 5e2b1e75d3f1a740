"""`metering.usage.aggregate`, the read billing uses: exact to the second for every formula.

Hypothesis draws boundaries and events clustered around them (one second before, at,
after; same minute), values including negatives, raw and pre-aggregated meters,
cancellations, and compares the aggregate over random [start, end) ranges with an oracle
computed from the stored events. Another test counts the items a month's aggregate reads:
the same for 10 and 5,000 events, apart from the events inside the two edge minutes.
"""

import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metering import aggregate, usage
from metering import aws as clients
from metering.errors import StripeError
from tests.billing_fixtures import (  # noqa: F401 - billing_fixture provides the `billing` fixture
    DAY,
    MINUTE,
    billing_fixture,
    cancel,
    counted_events,
    expected,
    new_meter,
    principal,
    send,
)
from tests.streams import insert_record, stream_pump

NOW = int(time.time())
BASE = NOW - NOW % DAY - 3 * DAY
METERS = [("sum", None), ("count", None), ("last", None), ("sum", "hour"), ("last", "day"), ("count", "hour")]
CUSTOMERS = ["cus_a", "cus_b#1"]


@st.composite
def histories(draw):
    boundaries = draw(st.lists(st.integers(0, 2 * DAY), min_size=2, max_size=4))
    near = st.builds(
        lambda b, d: min(max(b + d, 0), 2 * DAY - 1), st.sampled_from(boundaries), st.integers(-90, 90)
    )
    offset = st.one_of(near, near, st.integers(0, 2 * DAY - 1))
    value = st.decimals(min_value=-20, max_value=50, places=3, allow_nan=False, allow_infinity=False)
    send_step = st.tuples(
        st.just("send"),
        st.integers(0, len(METERS) - 1),
        st.sampled_from(CUSTOMERS),
        offset,
        value,
        st.integers(0, 30),
    )
    cancel_step = st.tuples(st.just("cancel"), st.integers(0, len(METERS) - 1), st.integers(0, 30))
    steps = draw(
        st.lists(st.one_of(send_step, send_step, send_step, cancel_step, st.just(("settle",))), max_size=30)
    )
    ranges = draw(
        st.lists(
            st.tuples(st.sampled_from(boundaries), st.sampled_from([*boundaries, 2 * DAY])),
            min_size=1,
            max_size=4,
        )
    )
    return steps, [(BASE + min(a, b), BASE + max(a, b)) for a, b in ranges]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=histories())
def test_aggregate_equals_the_oracle_over_any_range_to_the_second(billing, history):
    steps, ranges = history
    who = principal()
    created = [new_meter(who, formula, window) for formula, window in METERS]
    pump = stream_pump(billing)
    for step in steps:
        if step[0] == "send":
            _, index, customer, offset, value, ident = step
            try:
                send(who, created[index], customer, BASE + offset, value, identifier=f"id{ident}")
            except StripeError as exc:
                assert exc.code == "duplicate_identifier"
        elif step[0] == "cancel":
            try:
                cancel(who, created[step[1]], f"id{step[2]}")
            except StripeError as exc:
                assert exc.param in ("cancel[identifier]", "event_name")
        else:
            pump.settle()
    pump.settle()
    truth = counted_events(billing, who.scope)
    for (formula, _), meter in zip(METERS, created, strict=True):
        for customer in CUSTOMERS:
            events = truth.get((meter["id"], customer), [])
            for start, end in [*ranges, (BASE, BASE + 2 * DAY)]:
                got = usage.aggregate(who.scope, meter, customer, start, end)
                assert got == expected(formula, events, start, end), (
                    formula,
                    customer,
                    start - BASE,
                    end - BASE,
                )


def test_the_last_second_of_a_period_counts_and_the_end_does_not(billing):
    """For every formula, raw and pre-aggregated: an event at end - 1 is in [start, end), one
    at end is in the next period (two customers, so pre-aggregation windows don't merge them)."""
    who = principal()
    end = BASE + DAY + 7 * MINUTE + 13
    meters = [new_meter(who, formula, window) for formula, window in METERS]
    for meter in meters:
        send(who, meter, "cus_in", end - 1, "5")
        send(who, meter, "cus_out", end, "7")
    stream_pump(billing).settle()
    for (formula, _), meter in zip(METERS, meters, strict=True):
        got = [
            usage.aggregate(who.scope, meter, customer, start, stop)
            for customer in ("cus_in", "cus_out")
            for start, stop in ((BASE, end), (end, BASE + 2 * DAY))
        ]
        assert got == ([1, 0, 0, 1] if formula == "count" else [5, 0, 0, 7]), formula


def _reads(action) -> tuple[int, int]:
    """(bucket items, ledger items) returned by Query while `action` ran."""
    buckets, ledger = [], []

    def asked(params, context, **_):
        context["partition"] = params["ExpressionAttributeValues"][":pk"]["S"]

    def returned(parsed, context, **_):
        (ledger if context["partition"].startswith("L#") else buckets).append(len(parsed.get("Items", [])))

    client = clients.dynamodb()
    client.meta.events.register("provide-client-params.dynamodb.Query", asked)
    client.meta.events.register("after-call.dynamodb.Query", returned)
    try:
        action()
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.Query", asked)
        client.meta.events.unregister("after-call.dynamodb.Query", returned)
    return sum(buckets), sum(ledger)


def test_reads_do_not_grow_with_the_events_of_the_period(billing):
    """Events go straight through the aggregate function (stream records shaped like the
    events table's). A 31-day range with ragged second edges reads whole day/hour/minute
    buckets plus only the events inside its two edge minutes."""
    who = principal()
    start = NOW - NOW % DAY - 33 * DAY + 7 * 3600 + 17 * MINUTE + 23
    end = start + 31 * DAY + 5 * 3600 + 41
    results = {}
    for n in (10, 5000):
        meter = new_meter(who, "sum", name=f"m{n}_{uuid.uuid4().hex[:6]}")
        times = [start + 2 * MINUTE + (i * 7919) % (31 * DAY - 4 * MINUTE) for i in range(n)]
        times += [start + 5, start + 10, end - 3]  # 2 events in the first edge minute, 1 in the last
        images = [
            {"t": "raw", "st": "ok", "scope": who.scope, "mid": meter["id"], "cust": "cus_1", "ts": ts}
            | {"seq": f"{i:020d}", "ident": f"bulk-{i}", "v": "1"}
            for i, ts in enumerate(times)
        ]
        for i in range(0, len(images), 100):
            records = [insert_record(image, i + k) for k, image in enumerate(images[i : i + 100])]
            assert aggregate.handle_batch(records, f"shard-{n}") == {
                "batchItemFailures": []
            }  # own shard: seqs restart
        found = []
        reads = _reads(
            lambda m=meter, out=found: out.append(usage.aggregate(who.scope, m, "cus_1", start, end))
        )
        results[n] = (*reads, found[0])
    keys, ledger_items, total = results[10]
    assert (ledger_items, total) == (3, 13) and keys < 200  # existing buckets of the month's cover
    assert results[5000][1:] == (3, 5003) and results[5000][0] < 200  # 3 edge-minute events; still bounded
