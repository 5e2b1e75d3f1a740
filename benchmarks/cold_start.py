"""Cold start: a fresh interpreter importing each handler with Lambda's path layout."""

import json
import os
import subprocess
import sys

from benchmarks.common import ROOT, Figure, median

RUNS = 7
PROBE = """
import sys, time
t = time.perf_counter()
{code}
print(time.perf_counter() - t)
"""


def _time(code: str, path: list[str], env: dict) -> float:
    out = subprocess.run(
        [sys.executable, "-S", "-c", PROBE.format(code=code)],
        env={**env, "PYTHONPATH": os.pathsep.join(path)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def _environment(template) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(AWS_DEFAULT_REGION="us-east-1", AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x")
    env.update(
        POWERTOOLS_SERVICE_NAME="metering",
        POWERTOOLS_METRICS_NAMESPACE="Metering",
        POWERTOOLS_LOG_LEVEL="INFO",
    )
    for name in (
        "MAIN_TABLE",
        "EVENTS_TABLE",
        "ROLLUPS_TABLE",
        "IDEMPOTENCY_TABLE",
        "EVENT_BUS_NAME",
        "UPLOAD_BUCKET",
    ):
        env[name] = name.lower()
    return env


def run() -> list:
    import site

    from metering_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    env = _environment(template)
    packages = site.getsitepackages()  # stands in for the Lambda runtime's bundled dependencies
    base_path = packages
    boto = median(
        _time('import boto3; boto3.client("dynamodb", region_name="us-east-1")', base_path, env)
        for _ in range(RUNS)
    )
    figures = [Figure("cold start", "baseline: import boto3 + dynamodb client", boto * 1000, "ms")]
    for logical_id, fn in sorted(template.functions().items()):
        module, _, _ = fn.handler.partition(".")
        path = [str(fn.code_uri), str(ROOT / "layers" / "common"), *packages]
        seconds = median(_time(f"import {module}", path, env) for _ in range(RUNS))
        ratio = seconds / boto
        figures.append(
            Figure(
                "cold start",
                f"{logical_id} ({seconds * 1000:.0f} ms)",
                ratio,
                "x boto3",
                "<= 1.6x",
                ratio <= 1.6,
            )
        )
    return figures


if __name__ == "__main__":
    print(json.dumps([f.row() for f in run()], indent=1))
