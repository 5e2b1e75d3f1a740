"""Concurrent clients of two accounts against `metering-local serve` (issue 16).

Lambda runs one request per process at a time, and Powertools keeps the current request
in class-level state. A runner that serves concurrent requests from one process lets a
request run as another tenant or with another request's body; these tests drive 16
concurrent SDK clients and check that every request stays its own.
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import stripe

from tests.contract.conftest import KEYS

THREADS = 16
ACCOUNTS = KEYS[:2]  # two test-mode accounts


def run_concurrently(calls: list) -> list:
    """Run every zero-argument call on 16 threads; results in call order, first error raised."""
    with ThreadPoolExecutor(THREADS) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def test_meters_created_concurrently_stay_in_their_account(runner):
    run = uuid.uuid4().hex[:8]
    clients = {key: runner.client(key) for key in ACCOUNTS}

    def create(key: str, i: int):
        params = {
            "display_name": f"conc {run} {key} {i}",
            "event_name": f"conc_{run}_{ACCOUNTS.index(key)}_{i}",
            "default_aggregation": {"formula": "sum"},
        }
        options = {"idempotency_key": f"conc-{run}-{key}-{i}"} if i % 2 else {}
        return key, params, clients[key].v1.billing.meters.create(params, options)

    calls = [lambda key=key, i=i: create(key, i) for i in range(24) for key in ACCOUNTS]
    created = run_concurrently(calls)

    mine: dict[str, set[str]] = {key: set() for key in ACCOUNTS}
    for key, params, meter in created:
        # The answer is about this request's body, not a concurrent one's.
        assert (meter.event_name, meter.display_name) == (params["event_name"], params["display_name"])
        mine[key].add(meter.id)
    for key in ACCOUNTS:
        listed = {
            m.id
            for m in clients[key].v1.billing.meters.list({"limit": 100}).auto_paging_iter()
            if m.event_name.startswith(f"conc_{run}_")
        }
        assert listed == mine[key], f"account of {key} sees other meters than it created"

    def retrieve(key: str, meter_id: str):
        try:
            return clients[key].v1.billing.meters.retrieve(meter_id).id
        except stripe.InvalidRequestError as exc:
            return exc.http_status

    lookups = [(key, other, meter.id) for key, _params, meter in created for other in ACCOUNTS]
    found = run_concurrently([lambda k=k, o=o, m=m: retrieve(o, m) for k, o, m in lookups])
    assert found == [m if k == o else 404 for k, o, m in lookups]  # only its own account finds it


def _summary_total(client, meter, start: int, end: int) -> Decimal:
    page = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": "cus_conc", "start_time": start, "end_time": end}
    )
    return Decimal(str(page.data[0].aggregated_value)) if page.data else Decimal(0)


def test_concurrent_v2_streams_of_two_accounts_count_exactly_once(runner):
    run = uuid.uuid4().hex[:8]
    event_name = f"stream_{run}"  # the same event name in both accounts: a mixed-up body counts elsewhere
    clients = {key: runner.client(key) for key in ACCOUNTS}
    meters = {
        key: clients[key].v1.billing.meters.create(
            {"display_name": "stream", "event_name": event_name, "default_aggregation": {"formula": "sum"}}
        )
        for key in ACCOUNTS
    }
    streams = {
        key: runner.client(clients[key].v2.billing.meter_event_session.create().authentication_token)
        for key in ACCOUNTS
    }
    now = datetime.now(UTC)
    batches, per_batch = 16, 25
    values = {  # distinct per account, so a body sent under the wrong account changes both totals
        key: [[f"{a + 1}{(b * per_batch + j) % 10}.5" for j in range(per_batch)] for b in range(batches)]
        for a, key in enumerate(ACCOUNTS)
    }

    def send(key: str, b: int):
        events = [
            {
                "event_name": event_name,
                "payload": {"stripe_customer_id": "cus_conc", "value": value},
                "identifier": f"{run}-{ACCOUNTS.index(key)}-{b}-{j}",
                "timestamp": now.isoformat(),
            }
            for j, value in enumerate(values[key][b])
        ]
        return streams[key].v2.billing.meter_event_stream.create({"events": events})

    run_concurrently([lambda key=key, b=b: send(key, b) for b in range(batches) for key in ACCOUNTS])

    start = int(now.timestamp()) // 60 * 60 - 3600
    end = start + 3 * 3600
    for key in ACCOUNTS:
        want = sum(Decimal(v) for batch in values[key] for v in batch)
        deadline = time.time() + 15
        while (got := _summary_total(clients[key], meters[key], start, end)) != want:
            if time.time() > deadline:
                break
            time.sleep(0.2)
        reports = [
            e.to_dict()
            for e in clients[key].v2.core.events.list({"object_id": meters[key].id}).data
            if e.type == "v1.billing.meter.error_report_triggered"
        ]
        codes = [
            t["code"]
            for report in reports
            for t in clients[key]
            .v2.core.events.retrieve(report["id"])
            .to_dict()["data"]["reason"]["error_types"]
        ]
        assert codes == [], f"account of {key}: events reported as errors: {codes}"
        totals = {k: _summary_total(clients[k], meters[k], start, end) for k in ACCOUNTS}
        assert got == want, f"account of {key}: summary {got} != {want} sent (totals now: {totals})"
