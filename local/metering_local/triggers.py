"""Event sources of the template, driven locally (DynamoDB streams, S3 uploads)."""

import threading

from metering_local import s3_trigger, stream_trigger
from metering_local.lambda_runtime import Runtime
from metering_local.template import Template


def start_triggers(
    template: Template, runtime: Runtime, names, stop: threading.Event
) -> list[threading.Thread]:
    """Start one poller per stream or S3 trigger declared in the template."""
    return [
        *stream_trigger.start(template, runtime, names, stop),
        *s3_trigger.start(template, runtime, names, stop),
    ]
