"""Meter event adjustments: cancel by identifier (v1 and v2)."""

from metering import adjustments, api
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/billing/meter_event_adjustments")
def create_v1():
    return api.ok(adjustments.create_v1(api.principal(app), api.params(app)))


@app.post("/v2/billing/meter_event_adjustments")
def create_v2():
    return api.ok(adjustments.create_v2(api.principal(app), api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
