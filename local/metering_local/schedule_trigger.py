"""EventBridge schedules (`Type: Schedule` events of the template), driven locally.

A `rate(N minute|minutes|hour|hours|day|days)` schedule invokes its function every N
units (or every `--schedule-interval` seconds when the runner is given one) with the
event EventBridge sends (`detail-type: Scheduled Event`). As with EventBridge's
asynchronous invocation, a failed invocation is retried twice. A result with
`continuations` (work left for another invocation) is invoked again with each, as the
deployed function does by invoking itself. `cron(...)` schedules are not emulated.
"""

import datetime
import logging
import re
import threading
import uuid

from metering_local import triggers

log = logging.getLogger("metering_local.schedule")
_RATE = re.compile(r"^rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)$")
_UNIT = {"minute": 60, "hour": 3600, "day": 86400}


def rate_seconds(expression: str) -> int | None:
    """Seconds between runs of a `rate(...)` expression; None for anything else."""
    found = _RATE.match(expression.strip())
    if not found:
        return None
    return int(found.group(1)) * _UNIT[found.group(2).rstrip("s")]


def scheduled_event(rule: str, region: str = "us-east-1") -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:events:{region}:123456789012:rule/{rule}"],
        "detail": {},
    }


class Schedule(threading.Thread):
    def __init__(self, rule: str, invoke, interval: float, stop: threading.Event):
        super().__init__(daemon=True, name=f"schedule-{rule}")
        self.rule, self.invoke, self.interval, self.stop = rule, invoke, interval, stop

    def run(self) -> None:
        while not self.stop.wait(self.interval):  # the first run one interval after start, as in AWS
            try:
                triggers.deliver(self.invoke, scheduled_event(self.rule), log)
            except Exception:
                log.exception("schedule %s failed", self.rule)


def start(template, runtime, stop: threading.Event, interval: float | None = None) -> list[threading.Thread]:
    """One thread per rate schedule in the template (`interval` overrides every rate)."""
    threads = []
    for fn in template.functions().values():
        for name, event in fn.events.items():
            if event.get("Type") != "Schedule":
                continue
            expression = str(event.get("Properties", {}).get("Schedule", ""))
            seconds = interval or rate_seconds(expression)
            if not seconds:
                log.warning("schedule %s of %s is not emulated: %s", name, fn.logical_id, expression)
                continue

            def invoke(event, _fn=fn.logical_id):
                return runtime.invoke(_fn, event)

            thread = Schedule(f"{fn.logical_id}-{name}", invoke, float(seconds), stop)
            thread.start()
            threads.append(thread)
    return threads
