"""Rollups from the events table's stream; failed chunks are reported for Lambda to retry."""

from metering import aggregate
from metering.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context) -> dict:
    return aggregate.handle_batch(event.get("Records", []))
