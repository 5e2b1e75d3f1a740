"""The local runner (`metering-local serve`, what `make serve` runs) in a subprocess, driven over HTTP."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["sk_test_contract_a", "sk_test_contract_b", "sk_live_contract_c", "sk_test_contract_fuzz"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Runner:
    def __init__(self, api_url: str, aws_url: str, process: subprocess.Popen, log: Path):
        self.api_url, self.aws_url, self.process, self.log = api_url, aws_url, process, log

    def client(self, key: str = KEYS[0], **options):
        import stripe

        addresses = {"api": self.api_url, "meter_events": self.api_url}
        return stripe.StripeClient(key, base_addresses=addresses, **options)

    def boto(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.aws_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    port, aws_port = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("runner") / "serve.log"
    args = [sys.executable, "-m", "metering_local", "serve", "--port", str(port), "--aws-port", str(aws_port)]
    for key in KEYS:
        args += ["--api-key", key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["METERING_CLOCK_CONTROL"] = "1"
    env["WEBHOOK_RETRY_BASE_SECONDS"] = "1"  # webhook retries after 1 s, 2 s, ... instead of minutes
    with open(log, "w") as out:
        process = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while "Ready." not in log.read_text():
        if process.poll() is not None or time.time() > deadline:
            process.kill()
            pytest.fail("runner did not start:\n" + log.read_text())
        time.sleep(0.2)
    yield Runner(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{aws_port}", process, log)
    process.terminate()
    try:
        assert process.wait(timeout=15) == 0, "runner did not stop cleanly on SIGTERM"
    finally:
        if process.poll() is None:
            process.kill()
