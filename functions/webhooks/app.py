"""Webhook endpoints API: /v1/webhook_endpoints (delivery is the webhook_delivery function)."""

from metering import api, webhooks
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/webhook_endpoints")
def create_endpoint():
    return api.ok(webhooks.create(api.principal(app), api.params(app)))


@app.get("/v1/webhook_endpoints")
def list_endpoints():
    return api.ok(webhooks.list_endpoints(api.principal(app), api.params(app)))


@app.get("/v1/webhook_endpoints/<endpoint_id>")
def retrieve_endpoint(endpoint_id: str):
    return api.ok(webhooks.retrieve(api.principal(app), endpoint_id, api.params(app)))


@app.post("/v1/webhook_endpoints/<endpoint_id>")
def update_endpoint(endpoint_id: str):
    return api.ok(webhooks.update(api.principal(app), endpoint_id, api.params(app)))


@app.delete("/v1/webhook_endpoints/<endpoint_id>")
def delete_endpoint(endpoint_id: str):
    return api.ok(webhooks.delete(api.principal(app), endpoint_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
