"""Drive the aggregate function from the events table's stream, as the local runner does."""

import threading

from metering import aggregate
from metering_local.stream_trigger import Mapping, StreamPoller


def apply_batch(event: dict) -> dict:
    return aggregate.handle_batch(event["Records"], event["shardId"])


def stream_pump(aws, invoke=apply_batch, mapping: Mapping | None = None) -> StreamPoller:
    """A poller over the events table whose `settle()` delivers everything written so far."""
    mapping = mapping or Mapping(batch_size=100, report_failures=True, bisect=True, max_retries=-1)
    return StreamPoller(aws.tables["EventsTable"], invoke, mapping, threading.Event(), interval=0)


def insert_record(image: dict, sequence: int) -> dict:
    """A stream INSERT record for an events-table item (for volume tests that skip ingest)."""
    from boto3.dynamodb.types import TypeSerializer

    serializer = TypeSerializer()
    new = {k: serializer.serialize(v) for k, v in image.items()}
    return {
        "eventName": "INSERT",
        "dynamodb": {
            "SequenceNumber": str(sequence),
            "NewImage": new,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }
