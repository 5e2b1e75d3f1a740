"""Webhook delivery: SQS messages (one per event and endpoint) -> signed POSTs, retried with backoff."""

from metering import webhook_delivery
from metering.observability import logger, metrics, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context) -> dict:
    return webhook_delivery.handle_records(event.get("Records", []))
