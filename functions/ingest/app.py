"""Meter events: v1 and v2 single events, v2 sessions and the v2 stream."""

from metering import api, ingest, sessions
from metering.observability import logger, metrics, tracer

app = api.build_app()


def _event(version: int):
    """A v1/v2 meter event; its own write carries the Idempotency-Key (see api.SELF_IDEMPOTENT)."""
    who, key = api.principal(app), api.idempotency_key(app)
    obj, replayed = ingest.create(who, api.params(app), version, key, api.request_fingerprint(app))
    return api.ok(obj, headers={"Idempotent-Replayed": "true"} if replayed else None)


@app.post("/v1/billing/meter_events")
def create_v1():
    return _event(1)


@app.post("/v2/billing/meter_events")
def create_v2():
    return _event(2)


@app.post("/v2/billing/meter_event_session")
def create_session():
    return api.ok(sessions.create(api.principal(app)))


@app.post("/v2/billing/meter_event_stream")
def stream():
    return api.ok(ingest.stream(api.caller(app), api.params(app)))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context) -> dict:
    return api.handle(app, event, context)
