"""The local runner's Lambda runtime: each instance is its own process, one event at a time."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from metering_local.lambda_runtime import FunctionError, Runtime, WorkerCrashed
from metering_local.template import Function

HANDLER = """
import os
import time

from aws_lambda_powertools.event_handler import APIGatewayRestResolver

app = APIGatewayRestResolver()
STATE = {}


class CustomError(Exception):
    pass


@app.post("/echo")
def echo():
    time.sleep(0.3)  # a concurrent request in the same process would replace current_event meanwhile
    return {"body": app.current_event.body, "pid": os.getpid()}


def lambda_handler(event, context):
    action = event.get("action")
    if action == "pid":
        STATE["seen"] = event["value"]
        time.sleep(event.get("sleep", 0))
        return {"pid": os.getpid(), "seen": STATE["seen"]}
    if action == "env":
        return {"value": os.environ.get(event["name"])}
    if action == "clock":
        from metering import clock

        return {"offset": clock.now() - time.time()}
    if action == "context":
        return {"remaining": context.get_remaining_time_in_millis(), "name": context.function_name}
    if action == "raise":
        raise ValueError("bad value " + event["value"])
    if action == "custom":
        raise CustomError("custom failure")
    if action == "crash":
        os._exit(3)
    if action == "pid_file":
        with open(event["path"], "w") as out:
            out.write(str(os.getpid()))
        time.sleep(60)
    return app.resolve(event, context)
"""


@pytest.fixture
def runtime(tmp_path, monkeypatch):
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLER))
    monkeypatch.setenv("METERING_RUNTIME_TEST", "from-the-parent")
    fn = Function("EchoFunction", tmp_path, "app.lambda_handler", {}, 7)
    runtime = Runtime({"EchoFunction": fn}, pool_size=4)
    yield runtime
    runtime.close()


def invoke(runtime, **event):
    return runtime.invoke("EchoFunction", event)


def concurrently(calls: list) -> list:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


def rest_event(body: str) -> dict:
    return {
        "resource": "/echo",
        "path": "/echo",
        "httpMethod": "POST",
        "headers": {"Content-Type": "text/plain"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/echo",
            "httpMethod": "POST",
            "stage": "local",
            "requestId": body,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def test_concurrent_invocations_run_in_separate_processes(runtime):
    results = concurrently([lambda i=i: invoke(runtime, action="pid", value=i, sleep=0.5) for i in range(2)])
    pids = [r["pid"] for r in results]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert [r["seen"] for r in results] == [0, 1]  # module state written by the other one is not seen
    again = invoke(runtime, action="pid", value=9)  # a warm instance serves the next event
    assert again["pid"] in pids and len(runtime.pools["EchoFunction"]._all) == 2


def test_an_invocation_during_prestart_takes_the_prestarted_instance(runtime):
    warming = runtime.prestart(["EchoFunction"])
    first = invoke(runtime, action="pid", value=1)
    warming.join()
    assert len(runtime.pools["EchoFunction"]._all) == 1
    assert invoke(runtime, action="pid", value=2)["pid"] == first["pid"]


def test_powertools_current_event_is_never_another_requests(runtime):
    bodies = [f"request-{i}" for i in range(8)]  # twice the pool size: instances are reused too
    results = concurrently([lambda b=b: runtime.invoke("EchoFunction", rest_event(b)) for b in bodies])
    assert [r["statusCode"] for r in results] == [200] * len(bodies)
    import json

    assert [json.loads(r["body"])["body"] for r in results] == bodies
    assert len({json.loads(r["body"])["pid"] for r in results}) <= 4


def test_environment_clock_and_context_reach_the_worker(runtime):
    from metering import clock

    assert invoke(runtime, action="env", name="METERING_RUNTIME_TEST") == {"value": "from-the-parent"}
    clock.shift(3600)
    try:
        assert invoke(runtime, action="clock")["offset"] == pytest.approx(3600, abs=5)
    finally:
        clock.shift(0)
    assert invoke(runtime, action="clock")["offset"] == pytest.approx(0, abs=5)
    context = invoke(runtime, action="context")
    assert context["name"] == "EchoFunction" and 5000 < context["remaining"] <= 7000


def test_function_errors_are_raised_in_the_caller(runtime):
    with pytest.raises(ValueError, match="bad value x"):
        invoke(runtime, action="raise", value="x")
    with pytest.raises(FunctionError) as err:
        invoke(runtime, action="custom")  # its class lives only in the worker's handler module
    assert err.value.type_name == "CustomError" and err.value.message == "custom failure"
    assert invoke(runtime, action="pid", value=1)["seen"] == 1  # the instance survives its errors


def test_a_crashed_instance_is_replaced(runtime):
    first = invoke(runtime, action="pid", value=1)["pid"]
    with pytest.raises(WorkerCrashed, match="exit code 3"):
        invoke(runtime, action="crash")
    assert invoke(runtime, action="pid", value=2)["pid"] != first
    assert len(runtime.pools["EchoFunction"]._all) == 1


def test_close_stops_every_instance(runtime):
    concurrently([lambda i=i: invoke(runtime, action="pid", value=i, sleep=0.3) for i in range(3)])
    workers = list(runtime.pools["EchoFunction"]._all)
    assert len(workers) >= 2
    started = time.monotonic()
    runtime.close()
    assert time.monotonic() - started < 2
    assert not any(w.process.is_alive() for w in workers)
    with pytest.raises(RuntimeError, match="closed"):
        invoke(runtime, action="pid", value=0)


def test_close_lets_a_busy_instance_finish_its_event(runtime):
    invoke(runtime, action="pid", value=0)
    out = {}
    busy = threading.Thread(target=lambda: out.update(invoke(runtime, action="pid", value=5, sleep=0.5)))
    busy.start()
    time.sleep(0.2)
    runtime.close(timeout=5)
    busy.join()
    assert out["seen"] == 5


def test_an_init_error_fails_the_invocation_and_is_retried_next_time(tmp_path):
    (tmp_path / "app.py").write_text("raise RuntimeError('broken at import')\n")
    fn = Function("BrokenFunction", tmp_path, "app.lambda_handler", {}, 3)
    with Runtime({"BrokenFunction": fn}, pool_size=2) as runtime:
        with pytest.raises(RuntimeError, match="broken at import"):
            runtime.invoke("BrokenFunction", {})
        (tmp_path / "app.py").write_text("def lambda_handler(event, context):\n    return {'ok': True}\n")
        assert runtime.invoke("BrokenFunction", {}) == {"ok": True}
        assert len(runtime.pools["BrokenFunction"]._all) == 1


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            return any(line.startswith("State:") and "Z" in line for line in status)
    except FileNotFoundError:
        return True


RUNNER = """
import sys, threading
from pathlib import Path
from metering_local.lambda_runtime import Runtime
from metering_local.template import Function

if __name__ == "__main__":
    code, pid_file = sys.argv[1], sys.argv[2]
    runtime = Runtime({"F": Function("F", Path(code), "app.lambda_handler", {}, 60)}, pool_size=2)
    print(runtime.invoke("F", {"action": "pid", "value": 0})["pid"], flush=True)  # then idle
    threading.Thread(target=runtime.invoke, args=("F", {"action": "pid_file", "path": pid_file})).start()
    threading.Event().wait()
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_do_not_outlive_a_killed_runner(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(HANDLER))
    (tmp_path / "runner.py").write_text(RUNNER)
    pid_file = tmp_path / "busy.pid"
    runner = subprocess.Popen(
        [sys.executable, str(tmp_path / "runner.py"), str(tmp_path), str(pid_file)], stdout=subprocess.PIPE
    )
    try:
        idle = int(runner.stdout.readline())
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()):
            assert time.monotonic() < deadline, "the busy worker did not start"
            time.sleep(0.1)
        busy = int(pid_file.read_text())
        assert not _gone(idle) and not _gone(busy)
    finally:
        runner.send_signal(signal.SIGKILL)  # no cleanup at all in the runner
        runner.wait()
    deadline = time.monotonic() + 10
    while not (_gone(idle) and _gone(busy)):
        assert time.monotonic() < deadline, f"orphaned workers: idle {idle} busy {busy}"
        time.sleep(0.1)
