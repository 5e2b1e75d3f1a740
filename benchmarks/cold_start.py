"""Cold start, measured the way Lambda runs it: each figure is a fresh interpreter.

Every measurement is its own `python -S` process, started the way the Lambda Python runtime
starts one for the function:

* the environment is Lambda's (`LAMBDA_TASK_ROOT`, `AWS_LAMBDA_FUNCTION_NAME`,
  `AWS_EXECUTION_ENV`, `_HANDLER`, `AWS_REGION`, the X-Ray daemon address that `Tracing: Active`
  gives, credentials...) plus that function's variables from template.yaml, references resolved
  to stand-in names; nothing is inherited from the shell running the bench;
* `sys.path` is in Lambda's order: the task root (the function's folder, also the working
  directory), then the layer (`/opt/python`: layers/common), then the dependencies: what
  `sam build` puts in the layer (layers/common/requirements.txt) and the runtime's boto3,
  installed once with `pip install --target` into build/cold_start/ at the versions this
  virtualenv has. Not the virtualenv itself: its test and dev packages (requests, awscrt,
  pyOpenSSL, sqlite drivers...) are not in Lambda, and optional imports would find them (the
  X-Ray SDK patches requests if it can import it; botocore loads awscrt and pyOpenSSL);
* what the runtime (awslambdaric's bootstrap) has imported before it imports the handler is
  imported before the clock starts;
* the clock covers `import <handler module>` and nothing else: what Lambda bills as the init
  phase on top of the runtime's own start.

The baseline, `import boto3; boto3.client("dynamodb")` in the same environment, runs right before
each function's run, round after round (baseline, function, baseline, function...), so both see
the same machine load; a function's ratio is the median of its runs over the median of the
baselines paired with them. The ratio held to the target (<= 1.1x) is of CPU time (the
process's, over the import), which other work on a shared machine barely moves; wall-clock
times and their ratio are shown beside it (the two agree on a quiet machine: importing is
CPU-bound once the files are cached).

Each function's import costs come from `python -X importtime` in the same environment (median
over a few runs): the time of the modules it imports that the baseline does not, grouped (our
own modules one by one, Powertools by feature, anything else by top-level package) so the
groups add up to the whole cost above the baseline, largest first, each with the module of
ours whose import pulled it in.
"""

import functools
import json
import os
import re
import statistics
import subprocess
import sys
import sysconfig

from benchmarks.common import ROOT, Figure, median

ROUNDS = int(os.environ.get("COLD_START_ROUNDS", "9"))
IMPORTTIME_RUNS = int(os.environ.get("COLD_START_IMPORTTIME_RUNS", "3"))
TOP = int(os.environ.get("COLD_START_TOP", "8"))
TARGET = 1.1
RUNTIME = "python3.12"  # template.yaml Globals.Function.Runtime
BASELINE = 'import boto3; boto3.client("dynamodb")'
# Imported by the runtime (awslambdaric bootstrap, marshaller and client) before the handler.
PRELOADED = "importlib, json, logging, os, sys, time, traceback, decimal, math, enum, concurrent.futures"
PROBE = f"""
import {PRELOADED}
sys.stderr.write("--- handler import ---\\n"); sys.stderr.flush()
t, cpu = time.perf_counter(), time.process_time()
{{code}}
print(time.perf_counter() - t, time.process_time() - cpu)
"""
_IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


@functools.cache
def _dependencies() -> list[str]:
    """The layer's requirements and boto3, pinned to this virtualenv's versions, in a folder of
    their own (built once); this virtualenv's site-packages if pip cannot build it (offline)."""
    from importlib.metadata import version

    requirements = (ROOT / "layers" / "common" / "requirements.txt").read_text().split()
    pins = []
    for requirement in [*requirements, "boto3"]:
        name = re.split(r"[\[<>=~!]", requirement, maxsplit=1)[0]
        extras = requirement[len(name) :].partition("]")[0] + "]" if "[" in requirement else ""
        pins.append(f"{name}{extras}=={version(name)}")
    key = "-".join(sorted(re.sub(r"\[.*\]", "", p).replace("==", "-") for p in pins))
    target = ROOT / "build" / "cold_start" / f"py{sys.version_info[0]}{sys.version_info[1]}-{key}"
    if not (target / ".complete").exists():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-warn-conflicts",
                "--target",
                str(target),
                *pins,
            ],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            print(f"cold_start: pip could not build {target}, using site-packages", file=sys.stderr)
            return list(dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]))
        (target / ".complete").touch()
    return [str(target)]


def _resolve(value, parameters: dict) -> str:
    """A template value as Lambda would see it, with stand-in names for the resources."""
    if isinstance(value, dict) and "Ref" in value:
        ref = value["Ref"]
        if ref in parameters:
            return str(parameters[ref].get("Default", ""))
        if ref.endswith("Queue"):
            return f"https://sqs.us-east-1.amazonaws.com/123456789012/{ref}"
        return f"metering-{ref}"
    if isinstance(value, dict) and "Fn::Sub" in value:
        return re.sub(r"\$\{[^}]+\}", "x", value["Fn::Sub"]).lower()
    if isinstance(value, dict):
        return "x"
    return str(value)


def lambda_environment(template, fn) -> dict[str, str]:
    """The variables the Lambda runtime gives a function's process, then the template's."""
    name = fn.logical_id
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(fn.code_uri),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_HANDLER": fn.handler,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}",
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(template.globals.get("MemorySize", 128)),
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIAXXXXXXXXXXXXXXXX",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_SESSION_TOKEN": "x",
    }
    if template.globals.get("Tracing") == "Active":
        env.update(
            AWS_XRAY_DAEMON_ADDRESS="169.254.79.129:2000",
            _AWS_XRAY_DAEMON_ADDRESS="169.254.79.129",
            _AWS_XRAY_DAEMON_PORT="2000",
            AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
        )
    env.update({k: _resolve(v, template.parameters) for k, v in fn.environment.items()})
    return env


def _run(code: str, fn, env: dict, *flags: str) -> subprocess.CompletedProcess:
    path = [str(fn.code_uri), str(ROOT / "layers" / "common"), *_dependencies()]
    return subprocess.run(
        [sys.executable, "-S", *flags, "-c", PROBE.format(code=code)],
        env={**env, "PYTHONPATH": os.pathsep.join(path)},
        cwd=fn.code_uri,
        capture_output=True,
        text=True,
        check=True,
    )


def _time(code: str, fn, env: dict) -> tuple[float, float]:
    """(wall, CPU) seconds of the import in a fresh process."""
    wall, cpu = _run(code, fn, env).stdout.split()[-2:]
    return float(wall), float(cpu)


OWN = ("app", "metering", "billing")


def import_rows(code: str, fn, env: dict) -> list[tuple[str, int, int]]:
    """(module, self microseconds, nesting level) from `-X importtime`, in its order (a module
    after the ones it imported), for what `code` imports after the runtime's preloads."""
    err = _run(code, fn, env, "-X", "importtime").stderr
    rows = []
    for line in err.partition("--- handler import ---")[2].splitlines():
        if m := _IMPORTTIME.match(line):
            rows.append((m[4], int(m[1]), len(m[3]) // 2))
    return rows


def _group(module: str) -> str:
    """What a module's time is charged to: our own modules one by one, Powertools by feature
    (`aws_lambda_powertools.tracing`, `...utilities.idempotency`), anything else by package."""
    parts = module.split(".")
    if parts[0] in OWN:
        return module
    if parts[0] == "aws_lambda_powertools" and len(parts) > 1:
        return ".".join(parts[: 3 if parts[1] == "utilities" else 2])
    return parts[0]


def import_costs(rows: list[tuple[str, int, int]], baseline: set[str]) -> dict[str, tuple[int, str]]:
    """Group -> (microseconds, importer): the own time of the group's modules that the baseline
    does not import (so groups add up to the whole cost above the baseline), and our module
    whose import first pulled the group in."""
    parents: dict[str, str] = {}
    pending: list[tuple[int, str]] = []  # (level, module) of modules whose importer comes later
    for name, _, level in rows:
        while pending and pending[-1][0] > level:
            parents[pending.pop()[1]] = name
        pending.append((level, name))
    out: dict[str, tuple[int, str]] = {}
    for name, own, _ in rows:
        if name in baseline:
            continue
        group = _group(name)
        importer = name
        while importer.split(".")[0] not in OWN and importer in parents:
            importer = parents[importer]
        us, first = out.get(group, (0, importer))
        out[group] = (us + own, first)
    return out


def _handler_module(fn) -> str:
    return fn.handler.rpartition(".")[0]


def run() -> list:
    from metering_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    functions = sorted(template.functions().items())
    envs = {name: lambda_environment(template, fn) for name, fn in functions}
    imports = {name: f"import {_handler_module(fn)}" for name, fn in functions}

    for name, fn in functions:  # warm the file cache and __pycache__ before timing anything
        _run(BASELINE, fn, envs[name])
        _run(imports[name], fn, envs[name])

    baselines: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in functions}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in functions}
    for _ in range(ROUNDS):
        for name, fn in functions:
            baselines[name].append(_time(BASELINE, fn, envs[name]))
            times[name].append(_time(imports[name], fn, envs[name]))

    every_baseline = [wall for runs in baselines.values() for wall, _ in runs]
    figures = [
        Figure(
            "cold start",
            f"baseline: {BASELINE} (Lambda env, wall, median of {len(every_baseline)})",
            median(every_baseline) * 1000,
            "ms",
        )
    ]
    for name, _ in functions:
        wall, base_wall = (median(run[0] for run in runs) for runs in (times[name], baselines[name]))
        cpu, base_cpu = (median(run[1] for run in runs) for runs in (times[name], baselines[name]))
        ratio = cpu / base_cpu
        figures.append(
            Figure(
                "cold start",
                f"{name} (wall {wall * 1000:.0f} vs {base_wall * 1000:.0f} ms: {wall / base_wall:.2f}x)",
                ratio,
                "x boto3 + client (CPU)",
                f"<= {TARGET}x",
                ratio <= TARGET,
            )
        )

    for name, fn in functions:
        baseline_modules, runs = set(), []
        for _ in range(IMPORTTIME_RUNS):
            baseline_modules |= {row[0] for row in import_rows(BASELINE, fn, envs[name])}
            runs.append(import_rows(imports[name], fn, envs[name]))
        costs = [import_costs(rows, baseline_modules) for rows in runs]
        groups = set().union(*costs)
        ms = {g: statistics.median(c.get(g, (0, ""))[0] for c in costs) / 1000 for g in groups}
        via = {g: next(c[g][1] for c in costs if g in c) for g in groups}
        figures.append(
            Figure("cold start imports", f"{name}: all above baseline", sum(ms.values()), "ms (importtime)")
        )
        for group in sorted(groups, key=lambda g: -ms[g])[:TOP]:
            where = "" if group == via[group] else f" (via {via[group]})"
            figures.append(
                Figure("cold start imports", f"{name}: {group}{where}", ms[group], "ms (importtime)")
            )
    return figures


if __name__ == "__main__":
    print(json.dumps([f.row() for f in run()], indent=1))
