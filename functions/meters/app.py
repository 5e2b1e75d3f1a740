"""Billing meters API: /v1/billing/meters."""

from metering import api, meters
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/billing/meters")
def create_meter():
    return api.ok(meters.create(api.principal(app), api.params(app)))


@app.get("/v1/billing/meters")
def list_meters():
    return api.ok(meters.list_meters(api.principal(app), api.params(app)))


@app.get("/v1/billing/meters/<meter_id>")
def retrieve_meter(meter_id: str):
    return api.ok(meters.retrieve(api.principal(app), meter_id, api.params(app)))


@app.post("/v1/billing/meters/<meter_id>")
def update_meter(meter_id: str):
    return api.ok(meters.update(api.principal(app), meter_id, api.params(app)))


@app.post("/v1/billing/meters/<meter_id>/deactivate")
def deactivate_meter(meter_id: str):
    return api.ok(meters.set_status(api.principal(app), meter_id, api.params(app), active=False))


@app.post("/v1/billing/meters/<meter_id>/reactivate")
def reactivate_meter(meter_id: str):
    return api.ok(meters.set_status(api.principal(app), meter_id, api.params(app), active=True))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
