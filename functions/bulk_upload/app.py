"""Bulk usage upload: S3 ObjectCreated under uploads/<account id>/ (and continuations)."""

from metering import bulk
from metering.observability import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return bulk.handle(event, context.get_remaining_time_in_millis, context.invoked_function_arn)
