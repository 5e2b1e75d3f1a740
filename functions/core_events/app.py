"""Stripe v2 thin events of the account: GET /v2/core/events[/{id}]."""

from metering import api, notifications
from metering.errors import not_found
from metering.observability import logger, tracer

app = api.build_app()


@app.get("/v2/core/events")
def list_events():
    return api.ok(notifications.list_page(api.principal(app).scope, api.params(app)))


@app.get("/v2/core/events/<event_id>")
def retrieve_event(event_id: str):
    event = notifications.get_event(api.principal(app).scope, event_id)
    if event is None:
        raise not_found(f"No such event: '{event_id}'")
    return api.ok(event)


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
