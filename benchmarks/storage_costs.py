"""DynamoDB cost per event (writes) and per summary (reads), counted on our client against moto."""

import time

from benchmarks.common import DAY, Calls, Figure, moto_account

BUSY_RECORDS = 1000


def _meter(who, name, **extra):
    from metering import meters

    params = {"display_name": name, "event_name": name, "default_aggregation": {"formula": "sum"}, **extra}
    return meters.create(who, params)


def _send(who, name, identifier, ts, value="1"):
    from metering import ingest

    payload = {"stripe_customer_id": "cus_busy", "value": value}
    ingest.create_v1(
        who, {"event_name": name, "identifier": identifier, "timestamp": str(ts), "payload": payload}
    )


def _measure(action) -> Calls:
    calls = Calls()
    try:
        action()
    finally:
        calls.close()
    return calls


def run() -> list:
    import threading

    from metering import adjustments, aggregate
    from metering.accounts import Principal
    from metering_local.stream_trigger import Mapping, StreamPoller

    figures = []
    now = int(time.time())
    base = now - now % DAY - 2 * DAY
    with moto_account() as names:
        who = Principal("acct_bench", False)
        _meter(who, "raw")
        _meter(who, "pre", event_time_window="hour")
        _send(who, "raw", "warm", base)  # warm the meter cache like a busy Lambda
        raw = _measure(lambda: [_send(who, "raw", f"r{i}", base + i) for i in range(100)])
        figures.append(
            Figure(
                "ingest writes",
                "raw event: write requests",
                raw.write_requests / 100,
                "per event",
                "<= 1",
                raw.write_requests / 100 <= 1,
            )
        )
        figures.append(Figure("ingest writes", "raw event: write units", raw.wcu / 100, "WCU per event"))
        _send(who, "pre", "p-first", base + 5)
        pre = _measure(lambda: [_send(who, "pre", f"p{i}", base + 10 + i) for i in range(100)])
        figures.append(
            Figure(
                "ingest writes",
                "pre-aggregated replacement: write requests",
                pre.write_requests / 100,
                "per event",
            )
        )
        figures.append(
            Figure(
                "ingest writes",
                "pre-aggregated replacement: write units",
                pre.wcu / 100,
                "WCU per event",
                "2 items x 2 (transaction)",
            )
        )
        cancels = _measure(
            lambda: [
                adjustments.create_v1(who, {"event_name": "raw", "cancel": {"identifier": f"r{i}"}})
                for i in range(50)
            ]
        )
        figures.append(
            Figure("ingest writes", "cancel: write requests", cancels.write_requests / 50, "per cancel")
        )
        figures.append(Figure("ingest writes", "cancel: write units", cancels.wcu / 50, "WCU per cancel"))

        # one busy customer: 1,000 new events within one hour, aggregated from the stream
        mapping = Mapping(100, True, True, -1)
        apply = lambda e: aggregate.handle_batch(e["Records"], e["shardId"])  # noqa: E731
        poller = StreamPoller(names.tables["EventsTable"], apply, mapping, threading.Event(), 0)
        poller.settle()  # the events above
        for i in range(BUSY_RECORDS):
            _send(who, "raw", f"busy{i}", base + DAY + i % 3600)
        agg = _measure(poller.settle)
        ledger, buckets = agg.items.get("L", 0), agg.items.get("B", 0)
        figures.append(
            Figure(
                "rollup writes",
                "ledger items per 1,000 stream records",
                ledger,
                "items",
                "guard: 1 per event",
            )
        )
        figures.append(
            Figure(
                "rollup writes",
                "bucket items per 1,000 stream records",
                buckets,
                "items",
                "<< 1,000",
                buckets < 100,
            )
        )
        figures.append(
            Figure(
                "rollup writes",
                "transactions per 1,000 stream records",
                agg.requests["TransactWriteItems"],
                "requests",
            )
        )
        figures += summary_reads(who, base)
    return figures


def summary_reads(who, base) -> list:
    """Items read by a 31-day daily summary and a 31-day single summary at growing volumes."""
    from metering import aggregate, summaries
    from metering.store import to_item

    figures = []
    today = base + 2 * DAY
    start = today - 32 * DAY
    sequence = 0
    for count in (10, 10_000, 100_000):
        meter = _meter(who, f"volume{count}")
        # 10 days of the month, spread over each day; delivered in time order, 1,000 a batch
        times = sorted((today - 30 * DAY + (i % 10) * 3 * DAY + (i * 7919) % DAY, i) for i in range(count))
        for first in range(0, count, 1000):
            records = []
            for ts, i in times[first : first + 1000]:
                sequence += 1
                image = {
                    "t": "raw",
                    "st": "ok",
                    "scope": who.scope,
                    "mid": meter["id"],
                    "cust": "cus_busy",
                    "ts": ts,
                    "seq": f"{sequence:020d}",
                    "ident": f"v{count}-{i}",
                    "v": "1",
                    "f": "sum",
                }
                records.append(
                    {
                        "eventName": "INSERT",
                        "dynamodb": {"SequenceNumber": str(sequence), "NewImage": to_item(image)},
                    }
                )
            assert aggregate.handle_batch(records, "summary-bench") == {"batchItemFailures": []}
        for window in ("day", None):
            params = {
                "customer": "cus_busy",
                "start_time": str(start),
                "end_time": str(start + 31 * DAY),
                "limit": "100",
            }
            if window:
                params["value_grouping_window"] = window
            started = time.perf_counter()
            calls = _measure(lambda p=params, m=meter: summaries.list_summaries(who, m["id"], p))
            elapsed = time.perf_counter() - started
            label = "daily windows" if window else "one summary"
            figures.append(
                Figure(
                    "summary reads",
                    f"31 days, {label}, {count:,} events: latency (moto in process)",
                    elapsed * 1000,
                    "ms",
                )
            )
            figures.append(
                Figure(
                    "summary reads",
                    f"31 days, {label}, {count:,} events",
                    calls.read,
                    "items read",
                    "same for every volume",
                )
            )
    return figures
