"""Billing alerts in the aggregation path: per (alert, customer) counters and the firing.

Ingest copies a flag from the meter's name claim into every event item (`al`: 1 when the
meter has alerts without a customer filter, 2 with one). The aggregate function reads a
meter's alerts only for flagged stream records (`Watch.read`: one consistent query per
meter, plus one per customer for filtered alerts, per batch), so meters without alerts
cost nothing more.

An event counts towards an alert when it was flagged, received after the alert was
created (its receipt sequence is later than the alert's `since`), and the alert's filter
names its customer. Counter items (ROLLUPS_TABLE) `AC#<scope>#<alert id>` / `C#<customer>`
hold the running aggregate (`total`: sum of values, or number of events for count
meters), a version, the generation the alert last fired in for that customer (`fg`), and
a firing owed (`owe`, the generation, and `owv`, the value that reached the threshold).

Counters change in the same transaction as the ledger items they follow: only a real
ledger state change (absent -> counted adds, counted -> removed subtracts) moves a
counter, so redelivered or retried stream records change nothing. After the changes of
each stream record, a counter at or above `gte` of an active alert that has not fired in
the current generation gets a firing owed, in that same transaction. The firing itself is
a second transaction (`fire`): it checks the alert is still active in that generation,
writes the `billing.alert.triggered` event (metering.snapshot_events) and moves the
counter from owed to fired (conditioned on its version), so the stored event exists
exactly once. A crash between the two transactions leaves the firing owed on the counter;
the redelivered records find it there and fire it. Events are published after the firing
commits (bus, webhooks, the v2 thin event `v1.billing.alert.triggered`), best effort.
"""

import time
from dataclasses import dataclass, field
from decimal import Decimal

from botocore.exceptions import ClientError

from metering import alerts, aws, notifications, snapshot_events, store
from metering.config import settings
from metering.keys import key, part
from metering.meter_lookup import ALERTS_ALL as ALL
from metering.meter_lookup import ALERTS_BY_CUSTOMER as BY_CUSTOMER
from metering.observability import logger
from metering.values import exact
from metering.wire import format_decimal


def counter_key(scope: str, alert_id: str, customer: str) -> tuple[str, str]:
    return key("AC", scope, alert_id), key("C", part(customer))


def account_of(scope: str) -> tuple[str, bool]:
    account_id, _, mode = scope.rpartition(".")
    return account_id, mode == "live"


class Watch:
    """The alerts that the flagged contributions of one stream batch may count towards."""

    def __init__(self, by_meter: dict | None = None, by_customer: dict | None = None):
        self.by_meter: dict[tuple[str, str], list[dict]] = by_meter or {}
        self.by_customer: dict[tuple[str, str, str], list[dict]] = by_customer or {}

    @classmethod
    def read(cls, contributions) -> "Watch":
        """Query the alerts of the meters (and customers) of flagged contributions only."""
        watch = cls()
        table = settings().main_table
        for what in contributions:
            if not what.flags:
                continue
            pk = key("ACCT", what.scope)
            if what.flags & ALL and (what.scope, what.meter_id) not in watch.by_meter:
                prefix = alerts.watch_prefix(what.meter_id, None)
                watch.by_meter[(what.scope, what.meter_id)] = list(
                    store.query(table, pk, prefix, prefix + store.HIGH, True, consistent=True)
                )
            if (
                what.flags & BY_CUSTOMER
                and (what.scope, what.meter_id, what.customer) not in watch.by_customer
            ):
                prefix = alerts.watch_prefix(what.meter_id, what.customer)
                watch.by_customer[(what.scope, what.meter_id, what.customer)] = list(
                    store.query(table, pk, prefix, prefix + store.HIGH, True, consistent=True)
                )
        return watch

    def alerts_for(self, what) -> list[dict]:
        """The alerts a contribution counts towards."""
        if not what.flags:
            return []
        found = []
        if what.flags & ALL:
            found += self.by_meter.get((what.scope, what.meter_id), [])
        if what.flags & BY_CUSTOMER:
            found += self.by_customer.get((what.scope, what.meter_id, what.customer), [])
        return [a for a in found if int(a["since"]) < int(what.seq)]

    def counter_keys(self, contributions) -> list[tuple[str, str]]:
        return [
            counter_key(what.scope, alert["id"], what.customer)
            for what in contributions
            for alert in self.alerts_for(what)
        ]


@dataclass
class Counter:
    alert: dict
    customer: str
    total: Decimal = Decimal(0)
    ver: int = 0  # 0: not stored yet
    fired: int | None = None  # the generation the alert last fired in for this customer
    owe: int | None = None
    owed_value: Decimal | None = None
    dirty: bool = False
    touched: bool = field(default=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        return counter_key(self.alert["scope"], self.alert["id"], self.customer)

    @classmethod
    def from_item(cls, alert: dict, customer: str, item: dict | None) -> "Counter":
        if item is None:
            return cls(alert, customer)
        return cls(
            alert,
            customer,
            Decimal(item["total"]),
            int(item["ver"]),
            int(item["fg"]) if item.get("fg") is not None else None,
            int(item["owe"]) if item.get("owe") is not None else None,
            Decimal(item["owv"]) if item.get("owv") is not None else None,
        )

    def to_item(self) -> dict:
        pk, sk = self.key
        return {
            "pk": pk,
            "sk": sk,
            "alert": self.alert["id"],
            "cust": self.customer,
            "total": format_decimal(self.total),
            "ver": self.ver + 1,
            "fg": self.fired,
            "owe": self.owe,
            "owv": format_decimal(self.owed_value) if self.owed_value is not None else None,
        }

    def due(self) -> bool:
        """A firing is owed in the alert's current generation (as read)."""
        return (
            self.owe is not None and self.alert["status"] == "active" and self.owe == int(self.alert["gen"])
        )


class Tally:
    """The counters one chunk touches: read, changed record by record, written with it."""

    def __init__(self, watch: Watch, current: dict[tuple[str, str], dict], contributions):
        self.watch = watch
        self.counters: dict[tuple[str, str], Counter] = {}
        for what in contributions:
            for alert in watch.alerts_for(what):
                k = counter_key(what.scope, alert["id"], what.customer)
                if k not in self.counters:
                    self.counters[k] = Counter.from_item(alert, what.customer, current.get(k))
        self._record: str | None = None

    def change(self, record_id: str, what, sign: int) -> None:
        """A ledger state change of one contribution (sign +1: now counts, -1: stopped)."""
        if record_id != self._record:
            self.end_record()
            self._record = record_id
        for alert in self.watch.alerts_for(what):
            counter = self.counters[counter_key(what.scope, alert["id"], what.customer)]
            delta = Decimal(1) if alert.get("formula") == "count" else what.value
            with exact():
                counter.total += sign * delta
            counter.dirty = counter.touched = True

    def end_record(self) -> None:
        """After one record's changes: owe a firing where a threshold is reached."""
        for counter in self.counters.values():
            if not counter.touched:
                continue
            counter.touched = False
            alert = counter.alert
            gen = int(alert["gen"])
            if (
                alert["status"] == "active"
                and counter.total >= int(alert["gte"])
                and counter.fired != gen
                and counter.owe != gen
            ):
                counter.owe, counter.owed_value = gen, counter.total

    def writes(self) -> list[dict]:
        """Transaction Puts of the changed counters, each conditioned on the version read."""
        self.end_record()
        table = settings().rollups_table
        out = []
        for counter in self.counters.values():
            if not counter.dirty:
                continue
            put = {"TableName": table, "Item": store.to_item(counter.to_item())}
            if counter.ver:
                put["ConditionExpression"] = "ver = :ver"
                put["ExpressionAttributeValues"] = store.values({":ver": counter.ver})
            else:
                put["ConditionExpression"] = "attribute_not_exists(pk)"
            out.append({"Put": put})
        return out

    def committed(self) -> None:
        """The writes are stored: versions move on."""
        for counter in self.counters.values():
            if counter.dirty:
                counter.ver += 1
                counter.dirty = False

    def due(self) -> list[Counter]:
        return [c for c in self.counters.values() if c.due()]


def fire(counter: Counter) -> bool:
    """Fire an owed alert once: event and counter in one transaction; True when it fired now.

    Raises the transaction's ClientError when the counter changed meanwhile (the caller
    reads again and retries)."""
    alert, customer = counter.alert, counter.customer
    scope = alert["scope"]
    account_id, livemode = account_of(scope)
    gen = int(alert["gen"])
    pending = snapshot_events.Pending(scope, account_id, livemode)
    triggered = {
        "object": "billing.alert_triggered",
        "alert": alerts.to_object(alert),
        "created": int(time.time()),
        "customer": customer,
        "livemode": livemode,
        "value": counter.owed_value,
    }
    pk, sk = counter.key
    operations = [
        {
            "ConditionCheck": {
                "TableName": settings().main_table,
                "Key": store.to_item({"pk": key("ACCT", scope), "sk": alerts.PREFIX + alert["id"]}),
                "ConditionExpression": "#s = :active AND gen = :gen",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": store.values({":active": "active", ":gen": gen}),
            }
        },
        pending.add("billing.alert.triggered", triggered),
        {
            "Update": {
                "TableName": settings().rollups_table,
                "Key": store.to_item({"pk": pk, "sk": sk}),
                "UpdateExpression": "SET fg = :gen, ver = ver + :one REMOVE owe, owv",
                "ConditionExpression": "ver = :ver AND owe = :gen",
                "ExpressionAttributeValues": store.values({":gen": gen, ":one": 1, ":ver": counter.ver}),
            }
        },
    ]
    try:
        aws.dynamodb().transact_write_items(TransactItems=operations)
    except ClientError as exc:
        reasons = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
        if store.error_code(exc) == "TransactionCanceledException" and reasons[:1] == [
            "ConditionalCheckFailed"
        ]:
            _forget(counter)  # deactivated, re-armed or archived since: nothing is owed any more
            return False
        raise
    counter.ver += 1
    counter.fired, counter.owe, counter.owed_value = gen, None, None
    pending.publish()
    try:
        notifications.publish(
            account_id,
            livemode,
            "v1.billing.alert.triggered",
            {"id": alert["id"], "type": "billing.alert", "url": f"/v1/billing/alerts/{alert['id']}"},
            None,
        )
    except Exception:
        logger.exception("could not record the v2 event of a fired alert", extra={"alert_id": alert["id"]})
    return True


def _forget(counter: Counter) -> None:
    """Drop a firing that is no longer owed (conditional: the counter as read)."""
    pk, sk = counter.key
    try:
        aws.dynamodb().update_item(
            TableName=settings().rollups_table,
            Key=store.to_item({"pk": pk, "sk": sk}),
            UpdateExpression="SET ver = ver + :one REMOVE owe, owv",
            ConditionExpression="ver = :ver AND owe = :owe",
            ExpressionAttributeValues=store.values({":one": 1, ":ver": counter.ver, ":owe": counter.owe}),
        )
    except ClientError as exc:
        if store.error_code(exc) != "ConditionalCheckFailedException":
            raise
        return
    counter.ver += 1
    counter.owe, counter.owed_value = None, None
