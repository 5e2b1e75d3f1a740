"""Event sources of the template, driven locally (DynamoDB streams, S3 uploads)."""

import logging
import threading

from metering_local.lambda_runtime import Runtime
from metering_local.template import Template

RETRIES = 2  # S3 and EventBridge retry a failed asynchronous invocation twice


def deliver(invoke, event: dict, log: logging.Logger) -> None:
    """Invoke asynchronously as Lambda does (a failure is retried twice), then follow the
    continuations the function returns (the local form of its self-invocations)."""
    pending = [event]
    while pending:
        current = pending.pop(0)
        for attempt in range(RETRIES + 1):
            try:
                result = invoke(current) or {}
                pending.extend(result.get("continuations") or [])
                break
            except Exception:
                log.exception("invocation failed (attempt %d)", attempt + 1)


def start_triggers(
    template: Template, runtime: Runtime, names, stop: threading.Event
) -> list[threading.Thread]:
    """Start one poller per stream or S3 trigger declared in the template."""
    from metering_local import s3_trigger, stream_trigger

    return [
        *stream_trigger.start(template, runtime, names, stop),
        *s3_trigger.start(template, runtime, names, stop),
    ]
