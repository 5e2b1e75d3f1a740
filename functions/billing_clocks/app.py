"""Test clocks API: /v1/test_helpers/test_clocks (test mode only)."""

from billing import test_clocks
from metering import api
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/test_helpers/test_clocks")
def create_test_clock():
    return api.ok(test_clocks.create(api.principal(app), api.params(app)))


@app.get("/v1/test_helpers/test_clocks")
def list_test_clocks():
    return api.ok(test_clocks.list_clocks(api.principal(app), api.params(app)))


@app.get("/v1/test_helpers/test_clocks/<clock_id>")
def retrieve_test_clock(clock_id: str):
    return api.ok(test_clocks.retrieve(api.principal(app), clock_id, api.params(app)))


@app.delete("/v1/test_helpers/test_clocks/<clock_id>")
def delete_test_clock(clock_id: str):
    return api.ok(test_clocks.delete(api.principal(app), clock_id, api.params(app)))


@app.post("/v1/test_helpers/test_clocks/<clock_id>/advance")
def advance_test_clock(clock_id: str):
    return api.ok(test_clocks.advance(api.principal(app), clock_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
