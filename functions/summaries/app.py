"""Usage summaries: /v1/billing/meters/{id}/event_summaries."""

from metering import api, summaries
from metering.observability import logger, tracer

app = api.build_app()


@app.get("/v1/billing/meters/<meter_id>/event_summaries")
def list_event_summaries(meter_id: str):
    return api.ok(summaries.list_summaries(api.principal(app), meter_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
