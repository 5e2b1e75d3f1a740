"""Bulk upload: rows per second through the bulk function, and parse memory for 100k vs 1M rows."""

import gzip
import json
import subprocess
import sys
import tempfile
import time

from botocore.awsrequest import AWSResponse

from benchmarks.common import DAY, Figure, moto_account

ROWS = 5000
MEMORY_PROBE = """
import sys, tracemalloc
from metering.bulk_rows import rows
tracemalloc.start()
with open(sys.argv[1], "rb") as raw:
    import gzip
    count = sum(1 for _ in rows(gzip.open(raw), ".csv"))
print(count, tracemalloc.get_traced_memory()[1])
"""


def _csv(path: str, count: int, base: int, tag: str) -> None:
    with gzip.open(path, "wt", newline="") as out:
        out.write("identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n")
        for i in range(count):
            out.write(f"{tag}-{i},{base + i % DAY},tokens,cus_{i % 50},{i % 7}.5\n")


def _throughput(who, base: int, tag: str, latency: float) -> float:
    import boto3

    from metering import aws, bulk
    from metering.config import settings

    events_table = settings().events_table

    def slow(model, params, **_):
        """Every DynamoDB call waits `latency`; the per-row PutItem is then answered as a success
        without moto, so the figure shows our batching and concurrency, not moto's speed."""
        time.sleep(latency)
        if model.name == "PutItem" and json.loads(params["body"])["TableName"] == events_table:
            return AWSResponse("", 200, {}, None), {}
        return None

    client = aws.dynamodb()
    if latency:
        client.meta.events.register("before-call.dynamodb", slow)
    with tempfile.NamedTemporaryFile(suffix=".csv.gz") as f:
        _csv(f.name, ROWS, base, tag)
        key = f"uploads/{who.account_id}/{tag}.csv.gz"
        etag = (
            boto3.client("s3").upload_file(f.name, "metering-uploads", key)
            or boto3.client("s3").head_object(Bucket="metering-uploads", Key=key)["ETag"]
        )
    event = {
        "Records": [{"s3": {"bucket": {"name": "metering-uploads"}, "object": {"key": key, "eTag": etag}}}]
    }
    start = time.perf_counter()
    out = bulk.handle(event, lambda: 900_000)
    seconds = time.perf_counter() - start
    if latency:
        client.meta.events.unregister("before-call.dynamodb", slow)
    assert out == {"continuations": []}
    return ROWS / seconds


def _peak_memory(count: int) -> tuple[int, int]:
    with tempfile.NamedTemporaryFile(suffix=".csv.gz") as f:
        _csv(f.name, count, 1_700_000_000, "m")
        out = subprocess.run(
            [sys.executable, "-c", MEMORY_PROBE, f.name], capture_output=True, text=True, check=True
        )
    rows, peak = out.stdout.split()
    return int(rows), int(peak)


def run() -> list:
    from metering import meters
    from metering.accounts import Principal, create_key

    now = int(time.time())
    base = now - now % DAY - 3 * DAY
    with moto_account():
        _, account_id = create_key(secret="sk_test_bench_bulk")
        who = Principal(account_id, False)
        meters.create(
            who, {"display_name": "t", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
        )
        plain = _throughput(who, base, "plain", 0)
        slow = _throughput(who, base, "slow", 0.010)
    small, large = _peak_memory(100_000), _peak_memory(1_000_000)
    growth = large[1] / small[1] - 1
    return [
        Figure("bulk", f"rows/s, embedded moto ({ROWS:,} rows)", plain, "rows/s"),
        Figure(
            "bulk",
            "rows/s, 10 ms per DynamoDB call (writes stubbed)",
            slow,
            "rows/s",
            ">= 5,000",
            slow >= 5000,
        ),
        Figure("bulk", "parse peak memory, 100k rows", small[1] / 1e6, "MB"),
        Figure(
            "bulk",
            "parse peak memory, 1M rows",
            large[1] / 1e6,
            "MB",
            "within 20% of 100k",
            abs(growth) <= 0.2,
        ),
    ]
