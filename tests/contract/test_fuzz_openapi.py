"""Issue 18: schemathesis fuzzes every metering route of the served `/openapi.json` against the
local runner: no answer may be a 5xx, and every 4xx must be a Stripe-shaped error.

Bounded: a fixed number of generated requests per operation (EXAMPLES) and a time budget
for the whole run (BUDGET_SECONDS), with a dedicated account (the runner's fuzz key).
Requests are generated from the declared parameters and bodies (metering.openapi_spec);
path ids are real ids half of the time, so the handlers behind the 404 are reached too.
"""

import itertools
import time

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings

from tests.contract.conftest import KEYS

KEY = KEYS[3]
EXAMPLES = 12
BUDGET_SECONDS = 60
METERING = ("/v1/account", "/v1/billing/meter", "/v2/billing/meter", "/v2/core/events")


def stripe_shaped(body) -> bool:
    error = body.get("error") if isinstance(body, dict) else None
    return (
        isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    )


@pytest.fixture(scope="module")
def real_ids(runner):
    auth = {"Authorization": f"Bearer {KEY}"}
    form = {"display_name": "Fuzz", "event_name": "fuzz_target", "default_aggregation[formula]": "sum"}
    meter = requests.post(f"{runner.api_url}/v1/billing/meters", data=form, headers=auth, timeout=30).json()
    session = requests.post(
        f"{runner.api_url}/v2/billing/meter_event_session", json={}, headers=auth, timeout=30
    )
    events = requests.get(f"{runner.api_url}/v2/core/events", headers=auth, timeout=30).json()["data"]
    return {
        "meter_id": meter["id"],
        "event_id": events[0]["id"],
        "token": session.json()["authentication_token"],
    }


def test_no_metering_route_answers_5xx_and_every_4xx_is_stripe_shaped(runner, real_ids):
    schema = schemathesis.openapi.from_url(f"{runner.api_url}/openapi.json")
    operations = [
        result.ok() for result in schema.get_all_operations() if result.ok().path.startswith(METERING)
    ]
    assert len(operations) >= 15  # every metering route is declared and fuzzed
    deadline = time.monotonic() + BUDGET_SECONDS
    turn = itertools.count()
    failures: list[str] = []
    calls = 0

    def check(operation, case) -> None:
        nonlocal calls
        if time.monotonic() > deadline:
            return
        if next(turn) % 2:  # half of the time, the path names a real object
            for name in ("meter_id", "event_id"):
                if name in (case.path_parameters or {}):
                    case.path_parameters[name] = real_ids[name]
        stream = operation.path == "/v2/billing/meter_event_stream"
        token = real_ids["token"] if stream else KEY
        response = case.call(
            base_url=runner.api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        calls += 1
        label = f"{operation.method.upper()} {operation.path}"
        if response.status_code >= 500:
            failures.append(f"{label} answered {response.status_code}: {response.text[:300]}")
        elif response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = None
            if not stripe_shaped(body):
                failures.append(f"{label} answered a {response.status_code} that is not Stripe-shaped")
        if not any(name.lower() == "request-id" for name in response.headers):
            failures.append(f"{label} answered without Request-Id")

    def fuzzer(operation):
        @hypothesis_settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case):
            check(operation, case)

        return fuzz

    for operation in operations:
        if time.monotonic() > deadline:
            break
        fuzzer(operation)()
    assert calls >= len(operations) * 3
    assert not failures, "\n".join(dict.fromkeys(failures))
