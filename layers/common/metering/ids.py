"""Object ids that sort in creation order, exactly, even within one second."""

import secrets
import threading
import time

_lock = threading.Lock()
_last = 0


def monotonic_ns() -> int:
    """Wall-clock nanoseconds, strictly increasing within this process."""
    global _last
    with _lock:
        now = max(time.time_ns(), _last + 1)
        _last = now
        return now


def new_id(prefix: str) -> str:
    """`prefix_` + 16 hex digits of time + 8 random hex digits: sorts by creation."""
    return f"{prefix}_{monotonic_ns():016x}{secrets.token_hex(4)}"
