"""The service's notion of now. Tests (and the local runner, on request) shift it."""

import time

_offset = 0.0


def now() -> float:
    return time.time() + _offset


def shift(seconds: float) -> None:
    """Move the clock (tests only: the local runner exposes it when METERING_CLOCK_CONTROL=1)."""
    global _offset
    _offset = float(seconds)
