"""Billing alerts API: /v1/billing/alerts (usage thresholds; they fire in the aggregate function)."""

from metering import alerts, api
from metering.observability import logger, tracer

app = api.build_app()


@app.post("/v1/billing/alerts")
def create_alert():
    return api.ok(alerts.create(api.principal(app), api.params(app)))


@app.get("/v1/billing/alerts")
def list_alerts():
    return api.ok(alerts.list_alerts(api.principal(app), api.params(app)))


@app.get("/v1/billing/alerts/<alert_id>")
def retrieve_alert(alert_id: str):
    return api.ok(alerts.retrieve(api.principal(app), alert_id, api.params(app)))


@app.post("/v1/billing/alerts/<alert_id>/activate")
def activate_alert(alert_id: str):
    return api.ok(alerts.change(api.principal(app), alert_id, api.params(app), "activate"))


@app.post("/v1/billing/alerts/<alert_id>/deactivate")
def deactivate_alert(alert_id: str):
    return api.ok(alerts.change(api.principal(app), alert_id, api.params(app), "deactivate"))


@app.post("/v1/billing/alerts/<alert_id>/archive")
def archive_alert(alert_id: str):
    return api.ok(alerts.change(api.principal(app), alert_id, api.params(app), "archive"))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
