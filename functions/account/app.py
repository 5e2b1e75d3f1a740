"""GET /v1/account."""

from metering import api
from metering.observability import logger, tracer

app = api.build_app()


@app.get("/v1/account")
def get_account():
    who = api.principal(app)
    return api.ok({"id": who.account_id, "object": "account", "livemode": who.livemode})


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
