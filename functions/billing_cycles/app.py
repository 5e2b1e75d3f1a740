"""Scheduled period close and invoice finalization (EventBridge schedule, every minute)."""

from billing import cycles
from metering.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return cycles.handle(event, context.get_remaining_time_in_millis, context.invoked_function_arn)
