"""examples/ and the README's SDK quickstart, run as a user would against `metering-local serve`."""

import os
import re
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from tests.contract.conftest import KEYS
from tests.contract.test_usage_contract import settled

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
DAY = 86400


@pytest.fixture
def env(runner):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "METERING_"))}
    return {**clean, "METERING_API_URL": runner.api_url, "METERING_API_KEY": KEYS[0]}


def run(args: list[str], env: dict, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def today_total(client, meter_id: str, customer: str) -> Decimal:
    now = int(time.time())
    start = now - now % DAY
    (summary,) = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": customer, "start_time": start, "end_time": start + DAY}
    ).data
    return Decimal(str(summary.aggregated_value))


def test_record_usage_then_read_the_daily_summary(runner, env):
    event_name, customer = f"example_{uuid.uuid4().hex[:10]}", f"cus_{uuid.uuid4().hex[:10]}"
    args = [str(EXAMPLES / "record_usage.py"), "--event-name", event_name, "--customer", customer]
    first = run([*args, "--value", "2.5", "--stream", "3"], env)
    meter_id = re.search(r"^meter: (mtr_\w+)", first, re.M).group(1)
    assert "v2 stream: 3 events" in first
    second = run([*args, "--value", "0.5", "--stream", "0"], env)
    assert f"meter: {meter_id}" in second  # the same meter is found again, not created twice

    client = runner.client(KEYS[0])
    assert settled(lambda: today_total(client, meter_id, customer), Decimal("10.5")) == Decimal("10.5")

    out = run(
        [str(EXAMPLES / "daily_summary.py"), "--meter", meter_id, "--customer", customer, "--days", "3"], env
    )
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert re.search(rf"^{today}\s+10\.5$", out, re.M), out
    assert re.search(r"^total\s+10\.5$", out, re.M), out


def test_bulk_upload_a_csv_and_read_its_result(runner, env, tmp_path):
    client = runner.client(KEYS[0])
    event_name = f"bulk_example_{uuid.uuid4().hex[:10]}"
    meter = client.v1.billing.meters.create(
        {"display_name": "bulk example", "event_name": event_name, "default_aggregation": {"formula": "sum"}}
    )
    ts = int(time.time()) - 600
    csv = tmp_path / f"usage-{uuid.uuid4().hex[:8]}.csv"
    csv.write_text(
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        f"{event_name}-1,{ts},{event_name},cus_bulk,12\n"
        f"{event_name}-2,{ts + 60},{event_name},cus_bulk,3.5\n"
        f"{event_name}-3,{ts + 120},{event_name},cus_bulk,not-a-number\n"
    )
    out = run(
        [str(EXAMPLES / "bulk_upload.py"), str(csv), "--timeout", "60"],
        {**env, "AWS_ENDPOINT_URL": runner.aws_url, "METERING_BUCKET": "metering-uploads"},
    )
    assert "status: succeeded_with_errors  records: 3  ingested: 2  errors: 1" in out, out
    assert f"{event_name}-3,meter_event_invalid_value" in out, out  # the errors file, printed
    assert settled(lambda: today_total(client, meter.id, "cus_bulk"), Decimal("15.5")) == Decimal("15.5")


def test_readme_sdk_quickstart(runner, env):
    readme = (ROOT / "README.md").read_text()
    section = readme.split("With the official Stripe SDK", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    event_name = f"readme_{uuid.uuid4().hex[:10]}"
    code = (
        code.replace("http://127.0.0.1:3000", runner.api_url)
        .replace("sk_test_local", KEYS[0])
        .replace('"llm_tokens"', f'"{event_name}"')
        .replace('"req_002"', f'"{event_name}_1"')
        .replace('"cus_123"', f'"cus_{event_name}"')
        .replace("time.sleep(2)", "time.sleep(8)")  # a loaded CI machine aggregates more slowly
    )
    assert code.count(f'"{event_name}"') == 2 and KEYS[0] in code
    out = run(["-c", code], env)
    assert out.strip().splitlines()[-1] == "25", out


def test_readme_curl_quickstart(runner, env):
    readme = (ROOT / "README.md").read_text()
    script = re.search(r"## Quickstart.*?```sh\n(.*?)```", readme, re.S).group(1)
    name = f"curl_{uuid.uuid4().hex[:10]}"
    script = (
        script.replace("http://127.0.0.1:3000", runner.api_url)
        .replace("sk_test_local", KEYS[0])
        .replace("event_name=ai_tokens", f"event_name={name}")
        .replace("identifier=req_001", f"identifier={name}_1")
        .replace("cus_123", f"cus_{name}")
        .replace("sleep 2", "sleep 8")  # a loaded CI machine aggregates more slowly
    )
    assert script.count(f"event_name={name}") == 2
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert '"object":"billing.meter_event"' in done.stdout
    assert '"aggregated_value":25' in done.stdout, done.stdout
