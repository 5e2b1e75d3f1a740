"""Shared set-up of the billing tests: moto state from template.yaml plus helpers that
create meters, customers, prices and subscriptions and ingest usage in-process."""

import uuid
from decimal import Decimal

import pytest

from metering.accounts import Principal

DAY, HOUR, MINUTE = 86400, 3600, 60


@pytest.fixture(name="billing")
def billing_fixture(aws):
    """moto tables (from the template) and fresh caches for one billing test."""
    from billing import config as billing_config
    from metering import clock

    billing_config.billing_settings.cache_clear()
    yield aws
    clock.shift(0)
    billing_config.billing_settings.cache_clear()


def principal(live: bool = False) -> Principal:
    return Principal(f"acct_{uuid.uuid4().hex[:12]}", live)


def new_meter(
    who: Principal, formula: str = "sum", window: str | None = None, name: str | None = None
) -> dict:
    from metering import meters

    params = {
        "display_name": f"{formula} meter",
        "event_name": name or f"{formula}_{uuid.uuid4().hex[:8]}",
        "default_aggregation": {"formula": formula},
    }
    if window:
        params["event_time_window"] = window
    return meters.load(who, meters.create(who, params)["id"], consistent=True)  # the stored meter


def metered_price(who: Principal, meter: dict, interval: str = "month", **amount) -> dict:
    from billing import prices

    params = {
        "currency": "usd",
        "product_data": {"name": "API calls"},
        "recurring": {"interval": interval, "usage_type": "metered", "meter": meter["id"]},
        **(amount or {"unit_amount_decimal": "0.5"}),
    }
    return prices.create(who, params)


def send(
    who: Principal, meter: dict, customer: str, ts: int, value="1", identifier: str | None = None
) -> dict:
    from metering import ingest

    params = {
        "event_name": meter["event_name"],
        "timestamp": str(ts),
        "payload": {"stripe_customer_id": customer, "value": str(value)},
    }
    if identifier:
        params["identifier"] = identifier
    return ingest.create_v1(who, params)


def cancel(who: Principal, meter: dict, identifier: str) -> None:
    from metering import adjustments

    adjustments.create_v1(who, {"event_name": meter["event_name"], "cancel": {"identifier": identifier}})


def as_decimal(value) -> Decimal:
    return Decimal(str(value))


def counted_events(aws, scope: str) -> dict:
    """Oracle input: (meter id, customer) -> [(ts, seq, value)] of the stored events that count
    (raw events and pre-aggregation slots still `ok`), read from the events table itself."""
    from collections import defaultdict

    import boto3

    from metering.store import from_item

    counted = defaultdict(list)
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=aws.tables["EventsTable"]):
        for item in map(from_item, page["Items"]):
            if item.get("scope") == scope and item["t"] in ("raw", "slot") and item["st"] == "ok":
                value = Decimal(item["v"]) if item.get("v") is not None else Decimal(0)
                counted[(item["mid"], item["cust"])].append((int(item["ts"]), item["seq"], value))
    return counted


def expected(formula: str, events: list, start: int, end: int) -> Decimal | int:
    """The oracle: the formula over the counted events with start <= timestamp < end."""
    inside = [e for e in events if start <= e[0] < end]
    if formula == "count":
        return len(inside)
    if formula == "last":
        return max(inside)[2] if inside else Decimal(0)
    return sum((e[2] for e in inside), Decimal(0))
