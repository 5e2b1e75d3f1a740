"""End to end through the local runner: stripe SDK throughput from 8 threads, and summary lag.

Two throughputs, each for `SECONDS` from `THREADS` SDK threads against `metering-local
serve` in a subprocess: the v2 meter event stream (100 events per request, one session
token per thread) and v1 meter events (one event per request, through the authorizer).
Each is measured after `WARMUP` seconds of the same load, in which the functions' pools
grow to as many instances as there are threads (the runner starts one of each), so the
figure is the sustained rate, not the cold starts. Then the time from the last 200 until
a summary reflects every event sent.

Each phase also reports the CPU time it cost per event, summed over every process
involved (the runner, its function instances, this process with the SDK threads; Linux
only): on a machine shared with other work, events/s moves with the other load, CPU per
event much less, and 2,000 ms/s divided by it bounds what 2 free cores could do.

`METERING_BENCH_SECONDS` overrides the duration of each phase (quick local checks);
`METERING_BENCH_TEMPLATE` serves another template (e.g. a copy with another
`ReauthorizeEvery`, next to template.yaml so its CodeUri paths resolve).
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime

from benchmarks.common import BENCH_ENV, DAY, ROOT, Figure

THREADS, SECONDS, WARMUP, PER_REQUEST = 8, 10, 3, 100
KEY = "sk_test_bench"


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tree_cpu(root: int) -> float | None:
    """CPU seconds used so far by `root` and every process below it (Linux /proc), None elsewhere."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    stats: dict[int, tuple[int, float]] = {}
    for name in names:
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += stats.get(pid, (0, 0.0))[1]
        todo += [child for child, (parent, _) in stats.items() if parent == pid]
    return total


def _load(work, seconds: float, runner: int) -> tuple[int, float, float | None]:
    """Run `work(thread)` (returns events sent) in a loop on THREADS threads for `seconds`;
    (events, seconds, CPU seconds of the runner's process tree and of this process)."""
    sent = [0] * THREADS
    errors: list[BaseException] = []
    stop = time.perf_counter() + seconds

    def loop(n: int) -> None:
        try:
            while time.perf_counter() < stop:
                sent[n] += work(n)
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(THREADS)]
    cpu_before, own_before = _tree_cpu(runner), time.process_time()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    cpu_after = _tree_cpu(runner)
    cpu = None if cpu_before is None else cpu_after - cpu_before + time.process_time() - own_before
    if errors:
        raise errors[0]
    return sum(sent), elapsed, cpu


def run() -> list:
    import stripe

    seconds = float(os.environ.get("METERING_BENCH_SECONDS", SECONDS))
    port, aws_port = _port(), _port()
    log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, **BENCH_ENV}
    template = os.environ.get("METERING_BENCH_TEMPLATE")
    args = [sys.executable, "-m", "metering_local", *(["--template", template] if template else [])]
    args += ["serve", "--port", str(port), "--aws-port", str(aws_port)]
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

        # v2 stream: one session (and client) per thread, 100 events per request.
        streams = [
            stripe.StripeClient(
                client.v2.billing.meter_event_session.create().authentication_token,
                base_addresses={"api": url, "meter_events": url},
            )
            for _ in range(THREADS)
        ]
        run_id = uuid.uuid4().hex[:8]
        counters = [0] * THREADS

        def stream(n: int) -> int:
            counters[n] += 1
            stamp = datetime.now(UTC).isoformat()
            events = [
                {
                    "event_name": name,
                    "payload": {"stripe_customer_id": "cus_e2e"},
                    "identifier": f"{run_id}-{n}-{counters[n]}-{j}",
                    "timestamp": stamp,
                }
                for j in range(PER_REQUEST)
            ]
            streams[n].v2.billing.meter_event_stream.create({"events": events})
            return PER_REQUEST

        warm = _load(stream, WARMUP, process.pid)[0]
        stream_sent, stream_time, stream_cpu = _load(stream, seconds, process.pid)

        def v1(_n: int) -> int:
            client.v1.billing.meter_events.create(
                {"event_name": name, "payload": {"stripe_customer_id": "cus_e2e"}}
            )
            return 1

        warm += _load(v1, WARMUP, process.pid)[0]
        v1_sent, v1_time, v1_cpu = _load(v1, seconds, process.pid)
        total = warm + stream_sent + v1_sent  # every event sent, warm-up included
        last_ok = time.perf_counter()
        now = int(time.time())
        params = {"customer": "cus_e2e", "start_time": now - now % 60 - DAY, "end_time": now - now % 60 + 120}
        while True:
            value = client.v1.billing.meters.event_summaries.list(meter.id, params).data[0].aggregated_value
            if value >= total or time.perf_counter() - last_ok > 120:
                break
            time.sleep(0.05)
        lag = time.perf_counter() - last_ok
    finally:
        process.terminate()
        process.wait(timeout=20)
    stream_rate, v1_rate = stream_sent / stream_time, v1_sent / v1_time
    return [
        Figure(
            "end to end",
            f"v2 stream events/s, stripe SDK, {THREADS} threads x {PER_REQUEST}/request"
            f" ({stream_sent:,} events)",
            stream_rate,
            "events/s",
            ">= 500",
            stream_rate >= 500,
        ),
        Figure(
            "end to end",
            f"v1 events/s, stripe SDK, {THREADS} threads ({v1_sent:,} events)",
            v1_rate,
            "events/s",
            ">= 150",
            v1_rate >= 150,
        ),
        Figure("end to end", "last event's 200 -> summary reflects it", lag, "s", "a few seconds", lag <= 5),
    ] + [
        Figure("end to end", f"{what}: CPU per event, all processes", cpu * 1000 / sent, "ms")
        for what, cpu, sent in (("v2 stream", stream_cpu, stream_sent), ("v1", v1_cpu, v1_sent))
        if cpu is not None and sent
    ]
