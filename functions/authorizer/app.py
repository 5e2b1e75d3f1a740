"""API Gateway REQUEST authorizer: secret keys for the API, session tokens for the stream."""

from metering import authorize
from metering.observability import logger


@logger.inject_lambda_context
def lambda_handler(event: dict, context) -> dict:
    return authorize.policy_for(event)
