"""Rollups from the events table's stream; failed chunks are reported for Lambda to retry."""

from metering import aggregate
from metering.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context) -> dict:
    # The event source mapping has a tumbling window: that is what puts `shardId` in the
    # event, the key of the shard's watermark (the exactly-once guard). The window's state
    # is not used, but Lambda requires one in the answer.
    shard = event.get("shardId")
    if not shard:
        raise RuntimeError("no shardId in the stream event: set TumblingWindowInSeconds on the mapping")
    return {**aggregate.handle_batch(event.get("Records", []), shard), "state": {}}
