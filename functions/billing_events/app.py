"""Stripe v1 snapshot events of billing: GET /v1/events[/{id}]."""

from billing import events
from metering import api
from metering.observability import logger, tracer

app = api.build_app()


@app.get("/v1/events")
def list_events():
    return api.ok(events.list_events(api.principal(app), api.params(app)))


@app.get("/v1/events/<event_id>")
def retrieve_event(event_id: str):
    return api.ok(events.retrieve(api.principal(app), event_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
