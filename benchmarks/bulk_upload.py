"""Bulk upload: rows per second for one file, and parse memory for 100k vs 1M rows.

`python -m benchmarks --only bulk_upload`, or `python -m benchmarks.bulk_upload [ROWS
[INVOKERS [close] [gz]]]` for the HTTP figure alone (`close`: the endpoint closes every
connection, as werkzeug's server does, instead of keeping it alive as AWS's endpoints do;
`gz`: the file is gzip-compressed, so it is re-chunked by a first pass before its slices).

The realistic figure runs the bulk function against a local HTTP endpoint (a subprocess,
so it does not share the function's GIL): boto3 signs every request (SigV4) and sends it
over HTTP as in AWS, and every DynamoDB call waits LATENCY before it is answered. The
event inserts (`BatchExecuteStatement` on the events table) are answered as stored without
moto, so the figure measures our side (parsing, checks, request building, signing, HTTP,
concurrency) rather than moto's speed; every other call (progress, meter claims, S3) goes to
moto behind the same endpoint. A file is processed as in AWS: the first invocation splits
it into segments and each segment runs in its own invocation, here a process of a pool of
INVOKERS (Lambda gives each invocation its own vCPU; this machine has 2 cores for the
function processes and the endpoint together).
"""

import gzip
import io
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time

from benchmarks.common import BENCH_ENV, DAY, Figure, moto_account

ROWS = 5000
HTTP_ROWS = 200_000
LATENCY = 0.010
INVOKERS = 2
MEMORY_PROBE = """
import sys, tracemalloc
from metering.bulk_rows import rows
tracemalloc.start()
with open(sys.argv[1], "rb") as raw:
    import gzip
    count = sum(1 for _ in rows(gzip.open(raw), ".csv"))
print(count, tracemalloc.get_traced_memory()[1])
"""


def _csv(path: str, count: int, base: int, tag: str, compress: bool = True) -> None:
    opener = gzip.open if compress else open
    with opener(path, "wt", newline="") as out:
        out.write("identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n")
        for i in range(count):
            out.write(f"{tag}-{i},{base + i % DAY},tokens,cus_{i % 50},{i % 7}.5\n")


def _embedded(who, base: int, tag: str) -> float:
    """Rows/s against moto in process (no latency): moto's own speed dominates."""
    import boto3

    from metering import bulk

    with tempfile.NamedTemporaryFile(suffix=".csv.gz") as f:
        _csv(f.name, ROWS, base, tag)
        key = f"uploads/{who.account_id}/{tag}.csv.gz"
        boto3.client("s3").upload_file(f.name, "metering-uploads", key)
        etag = boto3.client("s3").head_object(Bucket="metering-uploads", Key=key)["ETag"]
    event = {
        "Records": [{"s3": {"bucket": {"name": "metering-uploads"}, "object": {"key": key, "eTag": etag}}}]
    }
    start = time.perf_counter()
    pending = [event]
    while pending:
        pending.extend(bulk.handle(pending.pop(0), lambda: 900_000)["continuations"])
    return ROWS / (time.perf_counter() - start)


# The endpoint: moto's server application behind a middleware that delays DynamoDB calls and
# answers the event inserts itself.


def serve(port: int, latency: float, events_table: str, keep_alive: bool = True) -> None:
    """The endpoint; `keep_alive` (as AWS's endpoints, which boto3 keeps connections to) serves
    it on the local runner's HTTP/1.1 server, else on werkzeug's, which closes every connection
    (a new TCP connection per call: client CPU that AWS does not cost)."""
    if keep_alive:
        return _serve_keep_alive(port, latency, events_table)
    import logging

    from moto.server import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from metering_local import moto_atomic

    moto_atomic.install()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = DomainDispatcherApplication(create_backend_app)
    mark = b'INTO \\"' + events_table.encode() + b'\\"'

    def middleware(environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if target.startswith("DynamoDB_20120810."):
            time.sleep(latency)
            if target.endswith(".BatchExecuteStatement"):
                body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
                if mark in body:
                    answer = json.dumps(
                        {"Responses": [{"TableName": events_table}] * body.count(b'"Statement"')}
                    )
                    headers = [("Content-Type", "application/x-amz-json-1.0"), ("x-amzn-RequestId", "bench")]
                    start_response("200 OK", [*headers, ("Content-Length", str(len(answer)))])
                    return [answer.encode()]
                environ["wsgi.input"] = io.BytesIO(body)
        return app(environ, start_response)

    make_server("127.0.0.1", port, middleware, threaded=True).serve_forever()


def _serve_keep_alive(port: int, latency: float, events_table: str) -> None:
    import threading

    from metering_local import aws_endpoint

    mark = b'INTO \\"' + events_table.encode() + b'\\"'

    class Endpoint(aws_endpoint.MotoEndpoint):
        def handle(self, request):
            target = request.header("x-amz-target") or ""
            if target.startswith("DynamoDB_20120810."):
                time.sleep(latency)
                if target.endswith(".BatchExecuteStatement") and request.body and mark in request.body:
                    answer = json.dumps(
                        {"Responses": [{"TableName": events_table}] * request.body.count(b'"Statement"')}
                    )
                    headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-RequestId": "bench"}
                    return 200, headers, answer.encode()
            return super().handle(request)

    aws_endpoint.MotoEndpoint = Endpoint
    aws_endpoint.start_moto("127.0.0.1", port)
    threading.Event().wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _invoke(event: dict) -> tuple[list, float]:
    """One invocation of the bulk function in a pool process (its own interpreter and clients)."""
    from metering import bulk

    started = time.process_time()
    out = bulk.handle(event, lambda: 900_000)
    return out["continuations"], time.process_time() - started


def _warm(_) -> int:
    from metering import bulk  # noqa: F401  (imports and clients before the clock starts)

    return os.getpid()


def _over_http(
    rows: int, latency: float = LATENCY, invokers: int = INVOKERS, keep_alive: bool = True, gz: bool = False
) -> dict:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, **BENCH_ENV, "AWS_ENDPOINT_URL": url}
    code = f"from benchmarks.bulk_upload import serve; serve({port}, {latency}, 'EventsTable', {keep_alive})"
    server = subprocess.Popen([sys.executable, "-c", code], env=env)
    saved = dict(os.environ)
    try:
        os.environ.update(env)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.1)
        return _run_file(rows, invokers, gz)
    finally:
        server.terminate()
        server.wait()
        os.environ.clear()
        os.environ.update(saved)


def _run_file(rows: int, invokers: int, gz: bool = False) -> dict:
    import boto3

    from benchmarks.common import provision
    from metering import meters
    from metering.accounts import Principal, create_key

    provision()
    _, account_id = create_key(secret="sk_test_bench_bulk_http")
    who = Principal(account_id, False)
    meters.create(
        who, {"display_name": "t", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    )
    now = int(time.time())
    name = "http.csv.gz" if gz else "http.csv"  # gzip: re-chunked by a first pass, then sliced
    with tempfile.NamedTemporaryFile(suffix=".csv") as f:
        _csv(f.name, rows, now - now % DAY - 3 * DAY, "http", compress=gz)
        key = f"uploads/{account_id}/{name}"
        boto3.client("s3").upload_file(f.name, "metering-uploads", key)
    etag = boto3.client("s3").head_object(Bucket="metering-uploads", Key=key)["ETag"]
    event = {
        "Records": [{"s3": {"bucket": {"name": "metering-uploads"}, "object": {"key": key, "eTag": etag}}}]
    }
    context = multiprocessing.get_context("spawn")
    with context.Pool(invokers) as pool:
        pool.map(_warm, range(invokers * 4))
        started = time.perf_counter()
        invocations, cpu = 0, 0.0
        running = [pool.apply_async(_invoke, (event,))]
        while running:
            follow_ups, used = running.pop(0).get()
            invocations, cpu = invocations + 1, cpu + used
            running += [pool.apply_async(_invoke, (e,)) for e in follow_ups]
        seconds = time.perf_counter() - started
    result = json.loads(
        boto3.client("s3")
        .get_object(Bucket="metering-uploads", Key=f"results/{account_id}/{name}.result.json")["Body"]
        .read()
    )
    assert result["ingested"] == rows, result
    return {
        "rows_per_s": rows / seconds,
        "seconds": seconds,
        "invocations": invocations,
        "cpu_ms_per_row": cpu * 1000 / rows,
    }


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
        plain = _embedded(who, base, "plain")
    http = _over_http(HTTP_ROWS)
    small, large = _peak_memory(100_000), _peak_memory(1_000_000)
    growth = large[1] / small[1] - 1
    label = f"one file of {HTTP_ROWS:,} rows, 10 ms per DynamoDB call, signed HTTP"
    return [
        Figure("bulk", f"rows/s, embedded moto ({ROWS:,} rows)", plain, "rows/s"),
        Figure(
            "bulk",
            f"rows/s, {label}",
            http["rows_per_s"],
            "rows/s",
            ">= 10,000",
            http["rows_per_s"] >= 10_000,
        ),
        Figure(
            "bulk",
            f"invocations for that file ({INVOKERS} at a time)",
            float(http["invocations"]),
            "invocations",
        ),
        Figure("bulk", "function CPU per row (all invocations)", http["cpu_ms_per_row"], "ms"),
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


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else HTTP_ROWS
    invokers = int(sys.argv[2]) if len(sys.argv) > 2 else INVOKERS
    options = sys.argv[3:]
    figures = _over_http(count, invokers=invokers, keep_alive="close" not in options, gz="gz" in options)
    print(json.dumps(figures, indent=1))
