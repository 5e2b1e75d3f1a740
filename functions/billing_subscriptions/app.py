"""Subscriptions and invoices API: /v1/subscriptions, /v1/subscription_items, /v1/invoices."""

from billing import invoices, subscriptions
from metering import api
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/subscriptions")
def create_subscription():
    return api.ok(subscriptions.create(api.principal(app), api.params(app)))


@app.get("/v1/subscriptions")
def list_subscriptions():
    return api.ok(subscriptions.list_subscriptions(api.principal(app), api.params(app)))


@app.get("/v1/subscriptions/<subscription_id>")
def retrieve_subscription(subscription_id: str):
    return api.ok(subscriptions.retrieve(api.principal(app), subscription_id, api.params(app)))


@app.post("/v1/subscriptions/<subscription_id>")
def update_subscription(subscription_id: str):
    return api.ok(subscriptions.update(api.principal(app), subscription_id, api.params(app)))


@app.delete("/v1/subscriptions/<subscription_id>")
def cancel_subscription(subscription_id: str):
    return api.ok(subscriptions.cancel(api.principal(app), subscription_id, api.params(app)))


@app.get("/v1/subscription_items/<item_id>")
def retrieve_subscription_item(item_id: str):
    return api.ok(subscriptions.retrieve_item(api.principal(app), item_id, api.params(app)))


@app.post("/v1/invoices/create_preview")
def create_preview():
    return api.ok(invoices.preview(api.principal(app), api.params(app)))


@app.get("/v1/invoices")
def list_invoices():
    return api.ok(invoices.list_invoices(api.principal(app), api.params(app)))


@app.get("/v1/invoices/<invoice_id>")
def retrieve_invoice(invoice_id: str):
    return api.ok(invoices.retrieve(api.principal(app), invoice_id, api.params(app)))


@app.post("/v1/invoices/<invoice_id>")
def update_invoice(invoice_id: str):
    return api.ok(invoices.update(api.principal(app), invoice_id, api.params(app)))


@app.get("/v1/invoices/<invoice_id>/lines")
def list_invoice_lines(invoice_id: str):
    return api.ok(invoices.list_lines(api.principal(app), invoice_id, api.params(app)))


@app.post("/v1/invoices/<invoice_id>/finalize")
def finalize_invoice(invoice_id: str):
    return api.ok(invoices.finalize_api(api.principal(app), invoice_id, api.params(app)))


@app.post("/v1/invoices/<invoice_id>/void")
def void_invoice(invoice_id: str):
    return api.ok(invoices.void(api.principal(app), invoice_id, api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
