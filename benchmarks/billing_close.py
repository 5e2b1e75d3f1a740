"""Period close at scale: many subscriptions due at one boundary, closed by the scheduled function.

Subscriptions (one metered item each, daily) are created through the billing layer in
in-process moto; usage is fed to the aggregate function as stream records (as the rollup
sections do), then the clock moves past the period end and `cycles.handle` (what the
schedule runs) closes every period into a draft invoice. The DynamoDB requests and items
of the close are counted per invoice at two usage volumes, to show they do not grow with
the events of the period.
"""

import time

from benchmarks.common import DAY, Calls, Figure, moto_account

SUBSCRIPTIONS = 10_000
PER_INVOICE_SUBSCRIPTIONS = 200
EVENT_VOLUMES = (1, 200)  # events per subscription in the period


def _subscriptions(who, n: int, events_each: int) -> int:
    """n daily subscriptions of one meter with `events_each` events each; returns the period end."""
    from billing import customers, prices, subscriptions
    from metering import aggregate, clock, meters
    from tests.streams import insert_record

    meter = meters.create(
        who,
        {
            "display_name": "m",
            "event_name": f"calls_{events_each}_{n}",
            "default_aggregation": {"formula": "sum"},
        },
    )
    price = prices.create(
        who,
        {
            "currency": "usd",
            "product_data": {"name": "API"},
            "recurring": {"interval": "day", "usage_type": "metered", "meter": meter["id"]},
            "unit_amount_decimal": "0.5",
        },
    )
    start = int(clock.now())
    records, seq = [], 0
    for _ in range(n):
        customer = customers.create(who, {})
        subscriptions.create(who, {"customer": customer["id"], "items": [{"price": price["id"]}]})
        for k in range(events_each):
            seq += 1
            image = {"t": "raw", "st": "ok", "scope": who.scope, "mid": meter["id"], "cust": customer["id"]}
            image |= {
                "ts": start + (k * 397) % (DAY - 120),
                "seq": f"{seq:020d}",
                "ident": f"e{seq}",
                "v": "1",
            }
            records.append(insert_record(image, seq))
    for i in range(0, len(records), 100):
        aggregate.handle_batch(records[i : i + 100])
    return start + DAY


def _close(end: int) -> float:
    """Run the schedule past `end` until nothing is due; the seconds it took."""
    from billing import cycles
    from metering import clock

    clock.shift(end + 5 - time.time())
    started = time.perf_counter()
    pending = [{"source": "aws.events"}]
    while pending:
        pending.extend(cycles.handle(pending.pop(0), lambda: 10**9)["continuations"])
    return time.perf_counter() - started


def run() -> list[Figure]:
    from metering import clock
    from metering.accounts import Principal

    figures = []
    with moto_account():
        for events_each in EVENT_VOLUMES:
            who = Principal(f"acct_bench{events_each}", False)
            clock.shift(0)
            end = _subscriptions(who, PER_INVOICE_SUBSCRIPTIONS, events_each)
            calls = Calls()
            _close(end)
            calls.close()
            n = PER_INVOICE_SUBSCRIPTIONS
            label = f"{events_each} event(s) per period"
            figures += [
                Figure(
                    "billing close",
                    f"requests per invoice, {label}",
                    sum(calls.requests.values()) / n,
                    "requests",
                ),
                Figure("billing close", f"items read per invoice, {label}", calls.read / n, "items"),
                Figure("billing close", f"write units per invoice, {label}", calls.wcu / n, "WCU"),
            ]
        who = Principal("acct_bench_scale", False)
        clock.shift(0)
        created = time.perf_counter()
        end = _subscriptions(who, SUBSCRIPTIONS, 1)
        setup = time.perf_counter() - created
        seconds = _close(end)
        clock.shift(0)
    figures += [
        Figure("billing close", f"set-up: {SUBSCRIPTIONS:,} subscriptions created", setup, "s"),
        Figure("billing close", f"{SUBSCRIPTIONS:,} periods closed at one boundary", seconds, "s"),
        Figure(
            "billing close",
            "invoices per second (moto in process, one worker)",
            SUBSCRIPTIONS / seconds,
            "invoices/s",
        ),
    ]
    return figures


if __name__ == "__main__":
    for figure in run():
        print(figure.row())
