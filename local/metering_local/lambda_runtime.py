"""Run the template's functions the way Lambda would: one request per process at a time.

Each function gets a small pool of instances. An instance is a worker process that
imports the handler module once, like one warm Lambda container, then serves one event
at a time received over a pipe. Workers are forked by multiprocessing's fork server (a
single-threaded process, never the runner itself: the runner has threads), which has
imported the third-party libraries every function uses (boto3, Powertools, pydantic, the
X-Ray SDK) once: a worker then imports only its own code (the handler and the layer),
which makes a cold start ~4x cheaper than a fresh interpreter. Nothing a handler runs
happens in the fork server, so instances still share no state.
Concurrent requests therefore run in separate processes, so nothing a handler or a
library keeps in process-wide state (Powertools' current event, module globals, caches)
is ever shared between two requests in flight.

Workers get the runner's environment as it is when they start, and the runner's
`metering.clock` offset with every event (the contract tests move the clock through the
runner). An exception raised by the function is raised again in the caller (the same
type when it can be rebuilt, else `FunctionError` naming it). A worker that dies is
replaced and its invocation raises `WorkerCrashed`. Workers are daemon processes, are
stopped by `Runtime.close()` (and at interpreter exit), and exit by themselves when the
runner goes away.
"""

import importlib.util
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from metering_local.template import Function

# Libraries imported once by the fork server, before any worker is forked (module names;
# one that is not installed is skipped). Only third-party code that every function
# imports anyway: the handler and the layer (`metering`, `billing`) are imported by each
# worker itself, after it has received its environment.
PRELOAD = [
    "boto3",
    "boto3.dynamodb.types",
    "botocore.session",
    "botocore.client",
    "aws_lambda_powertools.logging",
    "aws_lambda_powertools.metrics",
    "aws_lambda_powertools.tracing",
    "aws_lambda_powertools.event_handler",
    "aws_lambda_powertools.utilities.typing",
    "aws_xray_sdk.core",
    "pydantic",
]
if "forkserver" in multiprocessing.get_all_start_methods():
    _SPAWN = multiprocessing.get_context("forkserver")
    _SPAWN.set_forkserver_preload(PRELOAD)
else:  # no fork (Windows): a fresh interpreter per instance
    _SPAWN = multiprocessing.get_context("spawn")
_START_LOCK = threading.Lock()  # Process.start() touches multiprocessing's global child list


@dataclass
class LambdaContext:
    function_name: str
    timeout_seconds: int
    aws_request_id: str = ""
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = ""
    function_version: str = "$LATEST"

    def __post_init__(self):
        self.aws_request_id = self.aws_request_id or str(uuid.uuid4())
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_handler(fn: Function, instance: int):
    """Import the function's handler module from its CodeUri, as a fresh module (in this process)."""
    module_name, _, attr = fn.handler.rpartition(".")
    path = Path(fn.code_uri) / (module_name.replace(".", "/") + ".py")
    unique = f"lambda_{fn.logical_id}_{instance}"
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return getattr(module, attr)


class FunctionError(Exception):
    """The function raised an exception that cannot be rebuilt here; names its type."""

    def __init__(self, type_name: str, message: str):
        super().__init__(f"{type_name}: {message}")
        self.type_name, self.message = type_name, message


class WorkerCrashed(RuntimeError):
    """The instance's process died (or could not start) during the invocation."""


class _RemoteTraceback(Exception):
    """Carries the worker's traceback as the cause of the re-raised exception."""

    def __str__(self):
        return f"\n\nTraceback in the function's process:\n{self.args[0]}"


def _clock_offset() -> float:
    """The runner's `metering.clock` offset (moved by the /_local/clock test hook)."""
    clock = sys.modules.get("metering.clock")
    return float(getattr(clock, "_offset", 0.0)) if clock is not None else 0.0


# --- the worker process -------------------------------------------------------------------


def _error_reply(exc: BaseException) -> tuple:
    try:
        blob = pickle.dumps(exc)
    except Exception:
        blob = None
    text = "".join(traceback.format_exception(exc))
    return ("error", type(exc).__qualname__, str(exc), text, blob)


def _watch_parent(runner_pid: int) -> None:
    """Exit if the runner dies while this worker is busy (an idle worker sees the pipe close).

    Our parent is the fork server, which exits when the runner does (we are then adopted);
    the runner's pid is checked as well."""
    parent = os.getppid()
    while True:
        time.sleep(1.0)
        if os.getppid() != parent or not _alive(runner_pid):
            os._exit(1)


def _name_process(name: str) -> None:
    """Show the function's name in ps and top (Linux: the thread name, at most 15 bytes)."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(name.removesuffix("Function")[:15])
    except OSError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _exit_now() -> None:
    """Leave as Lambda ends a container: no interpreter teardown (that costs ~0.5 s here)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(0)


def _worker_main(fn: Function, instance: int, conn, environ: dict, runner_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the runner, which stops us
    _name_process(fn.logical_id)
    os.environ.clear()
    os.environ.update(environ)
    threading.Thread(target=_watch_parent, args=(runner_pid,), daemon=True, name="watch-parent").start()
    try:
        handler = load_handler(fn, instance)
    except BaseException as exc:  # an init error fails the invocation that started us
        conn.send(_error_reply(exc))
        _exit_now()
    try:
        from metering import clock  # the layer's clock (light), shifted to the runner's offset
    except ImportError:
        clock = None
    try:
        conn.send(("ready", os.getpid()))
    except OSError:
        _exit_now()  # the runner stopped while we were starting
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            _exit_now()  # the runner closed the pipe or went away
        if message is None:
            _exit_now()
        kind, *args = message
        try:
            if kind == "invoke":
                event, offset = args
                if clock is not None:
                    clock.shift(offset)
                result = handler(event, LambdaContext(fn.logical_id, fn.timeout))
            elif kind == "openapi":
                app = getattr(sys.modules[handler.__module__], "app", None)
                result = app.get_openapi_json_schema() if hasattr(app, "get_openapi_schema") else None
            else:
                raise ValueError(f"unknown message {kind!r}")
            reply = ("ok", result)
        except Exception as exc:
            reply = _error_reply(exc)
        try:
            conn.send(reply)  # pickles first: a result that cannot travel sends nothing...
        except (EOFError, OSError):
            _exit_now()
        except Exception as exc:
            conn.send(_error_reply(exc))  # ...and becomes the function's error


# --- the runner side ----------------------------------------------------------------------


class _Worker:
    """One instance: a process and the runner's end of its pipe. Used by one thread at a time."""

    def __init__(self, fn: Function, instance: int):
        self.fn, self.instance = fn, instance
        self.conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(
            target=_worker_main,
            args=(fn, instance, child, dict(os.environ), os.getpid()),
            name=f"{fn.logical_id}-{instance}",
            daemon=True,
        )
        with _START_LOCK:
            self.process.start()
        child.close()  # so a dead worker reads as EOF here
        try:
            reply = self._receive()
        except BaseException:
            self.stop(timeout=0)
            raise
        if reply[0] != "ready":
            self.stop()
            _raise_remote(reply)
        self.pid = reply[1]

    def alive(self) -> bool:
        return self.process.is_alive()

    def _receive(self):
        try:
            return self.conn.recv()
        except (EOFError, OSError) as exc:
            self.process.join(timeout=1)
            raise WorkerCrashed(
                f"{self.fn.logical_id} instance {self.instance} (pid {self.process.pid}) died"
                f" with exit code {self.process.exitcode}"
            ) from exc

    def call(self, *message):
        try:
            self.conn.send(message)
        except (EOFError, OSError):
            pass  # dead: the receive below reports it
        reply = self._receive()
        if reply[0] == "ok":
            return reply[1]
        _raise_remote(reply)

    def request_stop(self) -> None:
        """Ask the worker to exit once its current event (if any) is done."""
        try:
            self.conn.send(None)
        except (EOFError, OSError):
            pass

    def stop(self, timeout: float = 2.0) -> None:
        """Ask the worker to exit, then terminate it if it is still running after `timeout`."""
        self.request_stop()
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(1)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(1)
        self.conn.close()


def _raise_remote(reply: tuple):
    _, type_name, message, text, blob = reply
    exc = None
    if blob is not None:
        try:
            exc = pickle.loads(blob)
        except Exception:
            exc = None
    if not isinstance(exc, Exception):
        exc = FunctionError(type_name, message)
    raise exc from _RemoteTraceback(text)


class FunctionPool:
    """Up to `size` worker processes for one function, created when all others are busy.

    One instance starts at a time: an invocation that finds every instance busy while
    another one is starting waits for whichever becomes free first. A cold start costs
    ~0.1 s of CPU (a fork of the fork server) and an event a few milliseconds, so on a
    small machine a burst of concurrent requests is served sooner this way than by
    starting one process per request at once; the pool still grows, one instance at a
    time, while the demand lasts.
    """

    def __init__(self, fn: Function, size: int = 8):
        self.fn = fn
        self.size = size
        self._idle: list[_Worker] = []
        self._all: set[_Worker] = set()
        self._starting = False
        self._instances = 0
        self._closed = False
        self._cond = threading.Condition()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"runtime closed: cannot invoke {self.fn.logical_id}")

    def _acquire(self) -> _Worker:
        """An idle instance, else a new one (up to `size`), else wait for one to be free."""
        with self._cond:
            while True:
                self._check_open()
                while self._idle:
                    worker = self._idle.pop()  # the most recently used: the warmest
                    if worker.alive():
                        return worker
                    self._all.discard(worker)  # died while idle: replace it
                if not self._starting and len(self._all) < self.size:
                    instance = self._reserve()
                    break
                self._cond.wait()
        return self._start(instance, warming=False)

    def _reserve(self) -> int:
        """Mark an instance as starting (under the lock); its instance number."""
        self._starting = True
        self._instances += 1
        return self._instances

    def _start(self, instance: int, warming: bool) -> _Worker:
        """Start a reserved instance: handed to the caller, or (warming) put in the idle list."""
        worker = None
        try:
            worker = _Worker(self.fn, instance)
        finally:
            with self._cond:
                self._starting = False
                if worker is not None:
                    self._all.add(worker)
                    if warming:
                        self._idle.append(worker)
                self._cond.notify_all()
        if self._closed:
            self._release(worker, broken=True)
            self._check_open()
        return worker

    def _release(self, worker: _Worker, broken: bool = False) -> None:
        if broken or not worker.alive():
            worker.stop(timeout=0)
            with self._cond:
                self._all.discard(worker)
                self._cond.notify_all()
            return
        with self._cond:
            if self._closed:
                closing = True
            else:
                closing = False
                self._idle.append(worker)
                self._cond.notify_all()
        if closing:
            worker.stop()

    def _call(self, *message):
        worker = self._acquire()
        try:
            result = worker.call(*message)
        except WorkerCrashed:
            self._release(worker, broken=True)
            raise
        except BaseException:
            self._release(worker)
            raise
        self._release(worker)
        return result

    def invoke(self, event: dict):
        """Run the function on one event in an idle (or new) instance; its result or its exception."""
        return self._call("invoke", event, _clock_offset())

    def openapi_json(self) -> str | None:
        """The OpenAPI JSON of the function's Powertools resolver (`app`), None when it has none."""
        return self._call("openapi")

    def warm(self) -> None:
        """Start one instance if there is none yet (used to pre-start in the background)."""
        with self._cond:
            if self._all or self._starting or self._closed:
                return
            instance = self._reserve()
        self._start(instance, warming=True)

    def close(self) -> tuple[list[_Worker], list[_Worker]]:
        """Refuse new invocations; (idle, busy) instances. Idle ones are asked to exit here, busy
        ones by their invocation's thread once it is done (one writer per pipe, always)."""
        with self._cond:
            self._closed = True
            idle = list(self._idle)
            busy = [worker for worker in self._all if worker not in idle]
            self._idle.clear()
            self._cond.notify_all()
        for worker in idle:
            worker.request_stop()
        return idle, busy


class Runtime:
    def __init__(self, functions: dict[str, Function], pool_size: int = 8):
        self.pools = {name: FunctionPool(fn, pool_size) for name, fn in functions.items()}

    def invoke(self, logical_id: str, event: dict):
        return self.pools[logical_id].invoke(event)

    def prestart(self, logical_ids, stop: threading.Event | None = None) -> threading.Thread:
        """Start one instance of each function in the background, one after the other."""

        def run():
            for name in logical_ids:
                if stop is not None and stop.is_set():
                    return
                try:
                    self.pools[name].warm()
                except Exception:
                    pass  # the first invocation reports the error

        thread = threading.Thread(target=run, daemon=True, name="prestart")
        thread.start()
        return thread

    def close(self, timeout: float = 2.0) -> None:
        """Stop every instance: idle ones at once, busy ones after their event or `timeout`."""
        idle: list[_Worker] = []
        busy: list[_Worker] = []
        for pool in self.pools.values():
            pool_idle, pool_busy = pool.close()
            idle += pool_idle
            busy += pool_busy
        running = {worker.process.sentinel: worker for worker in idle + busy}
        deadline = time.monotonic() + timeout
        while running and time.monotonic() < deadline:
            for sentinel in multiprocessing.connection.wait(list(running), deadline - time.monotonic()):
                running.pop(sentinel)
        for worker in running.values():
            worker.process.terminate()  # a signal, not a message: the pipe stays its owner's
        for worker in idle:
            worker.stop(timeout=1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
