"""Billing alerts fire exactly once per (alert, customer, activation), whatever the delivery.

Hypothesis draws histories of meter events (sum and count meters, raw and pre-aggregated,
negative values, duplicate identifiers), cancels, alerts created at any point (with and
without a customer filter), deactivations and re-activations, and stream deliveries with
the faults of test_exactness (batches failing before or after their writes, delivered
twice, failing midway). The oracle replays the stream's records once each, in stream
order, through a plain model: ledger states per event, one running total per (alert,
customer) over the flagged events received after the alert, a firing whenever a record
leaves a total at or above `gte` while the alert is active and has not fired in its
current generation. Stored `billing.alert.triggered` events and counters must match it.
"""

import uuid
from collections import Counter, defaultdict
from decimal import Decimal

import boto3
from boto3.dynamodb.conditions import Key
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from metering import adjustments, alerts, ingest, meters, snapshot_events
from metering.accounts import Principal
from metering.errors import StripeError
from tests.integration.test_aggregate import BASE, HOUR
from tests.integration.test_exactness import FAULTS, faulty
from tests.streams import stream_pump

METERS = [("sum", None), ("sum", "hour"), ("count", None)]
CUSTOMERS = ["cus_a", "cus_b#x", "cus_c"]
_de = TypeDeserializer()

send = st.tuples(
    st.just("send"),
    st.integers(0, len(METERS) - 1),
    st.sampled_from(CUSTOMERS),
    st.integers(0, 2 * HOUR),
    st.integers(-100, 300).map(lambda tenths: Decimal(tenths) / 10),  # -10.0 to 30.0
    st.integers(0, 40),  # identifiers: a small pool, so duplicates happen
)
cancel = st.tuples(st.just("cancel"), st.integers(0, len(METERS) - 1), st.integers(0, 40))
settle = st.tuples(st.just("settle"))
create = st.tuples(
    st.just("alert"),
    st.integers(0, len(METERS) - 1),
    st.integers(1, 12),
    st.one_of(st.none(), st.sampled_from(CUSTOMERS)),
)
toggle = st.tuples(
    st.just("toggle"), st.integers(0, 5), st.sampled_from(["activate", "activate", "deactivate"])
)
steps = st.tuples(  # some alerts first (so most histories cross thresholds), then anything
    st.lists(create, min_size=1, max_size=3),
    st.lists(
        st.one_of(*[send] * 6, cancel, settle, settle, create, toggle),
        min_size=10,
        max_size=40,
    ),
).map(lambda parts: parts[0] + parts[1])


def image(record: dict, name: str) -> dict | None:
    raw = record["dynamodb"].get(name)
    return {k: _de.deserialize(v) for k, v in raw.items()} if raw else None


def counted(item: dict | None):
    """(ledger key, value, flags, seq, meter, customer) of an item that counts, or None."""
    if not item or item.get("t") not in ("raw", "slot") or item.get("st") != "ok":
        return None
    value = Decimal(item["v"]) if item.get("v") is not None else Decimal(0)
    ledger = (item["mid"], item["cust"], int(item["ts"]), item["seq"], item["ident"])
    return ledger, value, int(item.get("al") or 0), int(item["seq"]), item["mid"], item["cust"]


class Oracle:
    def __init__(self, alert_items: dict[str, dict]):
        self.alerts = alert_items  # alert id -> {meter, customer, gte, since, formula}
        self.ledger: dict = {}
        self.totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
        self.fired_gen: dict[tuple[str, str], int] = {}
        self.firings: list[tuple[str, str, Decimal]] = []

    def matches(self, alert: dict, what) -> bool:
        _, _, flags, seq, meter, customer = what
        bit = 2 if alert["customer"] is not None else 1
        return (
            flags & bit
            and meter == alert["meter"]
            and seq > alert["since"]
            and alert["customer"] in (None, customer)
        )

    def record(self, record: dict, status: dict[str, tuple[str, int]]) -> None:
        """One stream record; `status`: alert id -> (status, generation) when it was applied."""
        if record["eventName"] == "REMOVE":
            return
        old, new = counted(image(record, "OldImage")), counted(image(record, "NewImage"))
        if old is not None and new is not None and old[0] == new[0]:
            return
        changes = []
        if old is not None and self.ledger.get(old[0]) != "x":
            if self.ledger.get(old[0]) == "c":
                changes.append((old, -1))
            self.ledger[old[0]] = "x"
        if new is not None and old is None or (new is not None and old[0] != new[0]):
            if new[0] not in self.ledger:
                self.ledger[new[0]] = "c"
                changes.append((new, 1))
        touched = set()
        for what, sign in changes:
            for alert_id, alert in self.alerts.items():
                if alert_id in status and self.matches(alert, what):
                    delta = Decimal(1) if alert["formula"] == "count" else what[1]
                    self.totals[(alert_id, what[5])] += sign * delta
                    touched.add((alert_id, what[5]))
        for alert_id, customer in sorted(touched):
            state, gen = status[alert_id]
            total = self.totals[(alert_id, customer)]
            if state == "active" and total >= self.alerts[alert_id]["gte"]:
                if self.fired_gen.get((alert_id, customer)) != gen:
                    self.fired_gen[(alert_id, customer)] = gen
                    self.firings.append((alert_id, customer, total))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, plan=st.lists(st.sampled_from(FAULTS), max_size=30))
def test_alerts_fire_exactly_once_under_any_delivery(aws, steps, plan):
    who = Principal(f"acct_{uuid.uuid4().hex[:12]}", False)
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
    made: list[str] = []
    settles: list[dict] = []  # per settle: alert id -> (status, generation) while it ran
    applied_in: dict[str, int] = {}  # record sequence number -> the settle that first delivered it
    order: list[dict] = []  # records in stream order (first delivery of each)
    invoke = faulty(plan)

    def recording(event):
        for record in event["Records"]:
            seq = record["dynamodb"]["SequenceNumber"]
            if seq not in applied_in:
                applied_in[seq] = len(settles) - 1
                order.append(record)
        return invoke(event)

    pump = getattr(aws, "alert_pump", None)  # one poller for every example: each reads only new records
    if pump is None:
        pump = aws.alert_pump = stream_pump(aws)
    pump.settle()  # (records an earlier example left behind, if any)
    pump.consumer.invoke = recording

    def settle_now():
        items = {a: alerts.find(who.scope, a) for a in made}
        settles.append({a: (i["status"], int(i["gen"])) for a, i in items.items()})
        pump.settle()

    for step in steps:
        if step[0] == "send":
            _, index, customer, offset, value, ident = step
            params = {
                "event_name": f"e{index}",
                "timestamp": str(BASE + offset),
                "identifier": f"id{ident}",
                "payload": {"stripe_customer_id": customer, "value": str(value)},
            }
            try:
                ingest.create_v1(who, params)
            except StripeError as exc:
                assert exc.code == "duplicate_identifier"
        elif step[0] == "cancel":
            try:
                adjustments.create_v1(
                    who, {"event_name": f"e{step[1]}", "cancel": {"identifier": f"id{step[2]}"}}
                )
            except StripeError as exc:
                assert exc.param in ("cancel[identifier]", "event_name")
        elif step[0] == "alert":
            _, index, gte, customer = step
            threshold = {"gte": str(gte), "meter": created[index]["id"], "recurrence": "one_time"}
            if customer is not None:
                threshold["filters"] = [{"type": "customer", "customer": customer}]
            params = {"alert_type": "usage_threshold", "title": "t", "usage_threshold": threshold}
            made.append(alerts.create(who, params)["id"])
        elif step[0] == "toggle":
            if made:
                alerts.change(who, made[step[1] % len(made)], {}, step[2])
        else:
            settle_now()
    settle_now()

    definitions = {}
    for alert_id in made:
        item = alerts.find(who.scope, alert_id)
        definitions[alert_id] = {
            "meter": item["meter"],
            "customer": item.get("customer"),
            "gte": int(item["gte"]),
            "since": int(item["since"]),
            "formula": item["formula"],
        }
    oracle = Oracle(definitions)
    for record in order:
        oracle.record(record, settles[applied_in[record["dynamodb"]["SequenceNumber"]]])

    items, _ = snapshot_events.page(who.scope, 100, keep=lambda i: i["type"] == "billing.alert.triggered")
    stored = [snapshot_events.load(i)["data"]["object"] for i in items]
    got = Counter((s["alert"]["id"], s["customer"], Decimal(str(s["value"]))) for s in stored)
    assert got == Counter(oracle.firings)
    event(f"fired: {min(len(oracle.firings), 3)}{'+' if len(oracle.firings) >= 3 else ''}")
    event(f"re-armed firing: {len(oracle.firings) > len(set((a, c) for a, c, _ in oracle.firings))}")

    table = boto3.resource("dynamodb").Table(aws.tables["RollupsTable"])
    counters = {
        (i["alert"], i["cust"]): Decimal(i["total"])
        for alert_id in made
        for i in table.query(KeyConditionExpression=Key("pk").eq(f"AC#{who.scope}#{alert_id}"))["Items"]
    }
    assert counters == dict(oracle.totals)
