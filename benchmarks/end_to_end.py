"""End to end through the local runner: stripe SDK throughput from 8 threads, and summary lag."""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from benchmarks.common import DAY, ROOT, Figure

THREADS, SECONDS = 8, 10
KEY = "sk_test_bench"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run() -> list:
    import stripe

    port, aws_port = _port(), _port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    args = [sys.executable, "-m", "metering_local", "serve", "--port", str(port), "--aws-port", str(aws_port)]
    process = subprocess.Popen(
        [*args, "--api-key", KEY], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        deadline = time.time() + 60
        while "Ready." not in open(log.name).read():
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("runner did not start")
            time.sleep(0.2)
        url = f"http://127.0.0.1:{port}"
        client = stripe.StripeClient(KEY, base_addresses={"api": url, "meter_events": url})
        name = f"bench_{uuid.uuid4().hex[:8]}"
        meter = client.v1.billing.meters.create(
            {"display_name": "bench", "event_name": name, "default_aggregation": {"formula": "count"}}
        )
        sent = [0] * THREADS
        stop = time.time() + SECONDS

        def send(n: int) -> None:
            while time.time() < stop:
                client.v1.billing.meter_events.create(
                    {"event_name": name, "payload": {"stripe_customer_id": "cus_e2e"}}
                )
                sent[n] += 1

        threads = [threading.Thread(target=send, args=(n,)) for n in range(THREADS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rate = sum(sent) / (time.perf_counter() - started)
        last_ok = time.perf_counter()
        now = int(time.time())
        params = {"customer": "cus_e2e", "start_time": now - now % 60 - DAY, "end_time": now - now % 60 + 120}
        while True:
            value = client.v1.billing.meters.event_summaries.list(meter.id, params).data[0].aggregated_value
            if value >= sum(sent) or time.perf_counter() - last_ok > 120:
                break
            time.sleep(0.05)
        lag = time.perf_counter() - last_ok
    finally:
        process.terminate()
        process.wait(timeout=20)
    return [
        Figure(
            "end to end",
            f"v1 events/s, stripe SDK, {THREADS} threads ({sum(sent):,} events)",
            rate,
            "events/s",
        ),
        Figure("end to end", "last event's 200 -> summary reflects it", lag, "s", "a few seconds", lag <= 5),
    ]
