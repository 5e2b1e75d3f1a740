"""Drive the aggregate function from the events table's stream, as the local runner does."""

import threading

from metering import aggregate
from metering_local.stream_trigger import Mapping, StreamPoller


def apply_batch(event: dict) -> dict:
    return aggregate.handle_batch(event["Records"])


def stream_pump(aws, invoke=apply_batch, mapping: Mapping | None = None) -> StreamPoller:
    """A poller over the events table whose `settle()` delivers everything written so far."""
    mapping = mapping or Mapping(batch_size=100, report_failures=True, bisect=True, max_retries=-1)
    return StreamPoller(aws.tables["EventsTable"], invoke, mapping, threading.Event(), interval=0)
