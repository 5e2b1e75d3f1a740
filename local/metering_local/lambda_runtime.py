"""Run the template's functions in this process the way Lambda would.

Each function gets a small pool of instances: an instance is one import of the handler
module (its own module globals, like one warm Lambda container) and serves one event at
a time, so concurrent requests run concurrently in separate instances.
"""

import importlib.util
import queue
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from metering_local.template import Function


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
    """Import the function's handler module from its CodeUri, as a fresh module."""
    module_name, _, attr = fn.handler.rpartition(".")
    path = Path(fn.code_uri) / (module_name.replace(".", "/") + ".py")
    unique = f"lambda_{fn.logical_id}_{instance}"
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return getattr(module, attr)


class FunctionPool:
    def __init__(self, fn: Function, size: int = 8):
        self.fn = fn
        self.size = size
        self._idle: queue.Queue = queue.Queue()
        self._created = 0
        self._lock = threading.Lock()

    def _acquire(self):
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._created < self.size:
                self._created += 1
                return load_handler(self.fn, self._created)
        return self._idle.get()

    def invoke(self, event: dict):
        handler = self._acquire()
        try:
            return handler(event, LambdaContext(self.fn.logical_id, self.fn.timeout))
        finally:
            self._idle.put(handler)


class Runtime:
    def __init__(self, functions: dict[str, Function], pool_size: int = 8):
        self.pools = {name: FunctionPool(fn, pool_size) for name, fn in functions.items()}

    def invoke(self, logical_id: str, event: dict):
        return self.pools[logical_id].invoke(event)
