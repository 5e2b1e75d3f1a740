"""The HTTP side shared by every API function: resolver, parameters, errors, idempotency.

Each API function builds its resolver with `build_app()`, declares its routes, and hands
events to `handle()`. Errors are Stripe-shaped in one place (`_render`), every response
carries `Request-Id`, and POSTs with `Idempotency-Key` go through `metering.idempotency`.
"""

import base64
import secrets
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from pydantic import ValidationError

from metering import idempotency, wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid, unauthorized
from metering.observability import logger

JSON = "application/json"
MAX_BODY_BYTES = 1024 * 1024


def ok(obj: dict, status: int = 200) -> Response:
    return Response(status, JSON, wire.dumps(obj))


def _render(exc: StripeError) -> Response:
    headers = {}
    if exc.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if exc.should_retry else "false"
    return Response(exc.status, JSON, wire.dumps(exc.body()), headers)


def build_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(StripeError)
    def stripe_error(exc: StripeError):
        return _render(exc)

    @app.exception_handler(ValidationError)
    def validation_error(exc: ValidationError):
        return _render(wire.to_stripe_error(exc))

    @app.not_found
    def not_found(_exc):
        event = app.current_event
        return _render(
            StripeError(
                f"Unrecognized request URL ({event.http_method}: {event.path}).", 404, code="url_invalid"
            )
        )

    @app.exception_handler(Exception)
    def unexpected(exc: Exception):
        logger.exception("unhandled error")
        return _render(
            StripeError("An unexpected error occurred; retry.", 500, "api_error", should_retry=True)
        )

    app.use(middlewares=[_idempotency_middleware])
    return app


def principal(app: APIGatewayRestResolver) -> Principal:
    context = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer") or {}
    if not context.get("account_id"):
        raise unauthorized()
    return Principal(context["account_id"], str(context.get("livemode")).lower() == "true")


def caller(app: APIGatewayRestResolver) -> Principal:
    """The authorizer's principal, or for routes outside the authorizer (the v2 stream) the
    account of the session token in the Authorization header."""
    context = (app.current_event.raw_event.get("requestContext") or {}).get("authorizer") or {}
    if context.get("account_id"):
        return principal(app)
    from metering import sessions

    return sessions.authenticate(app.current_event.headers.get("authorization"))


def _raw_body(event) -> str:
    body = event.body or ""
    if event.is_base64_encoded:
        body = base64.b64decode(body).decode("utf-8", errors="replace")
    if len(body.encode("utf-8")) > MAX_BODY_BYTES:
        raise invalid("The request body is larger than 1 MB.", "body", "request_too_large")
    return body


def params(app: APIGatewayRestResolver) -> dict:
    """Request parameters: query string for GET, form or JSON body for POST (parsed once)."""
    if "params" in app.context:
        return app.context["params"]
    event = app.current_event
    query = event.multi_value_query_string_parameters or {}
    pairs = [(name, value) for name, values in query.items() for value in (values or [])]
    decoded = wire.parse_body(urlencode(pairs), None) if pairs else {}
    if event.http_method == "POST":
        body = wire.parse_body(_raw_body(event), event.headers.get("content-type"))
        decoded = {**decoded, **body}
    wire.check_unicode(decoded)
    app.append_context(params=decoded)
    return decoded


def _idempotency_middleware(app: APIGatewayRestResolver, next_middleware) -> Response:
    event = app.current_event
    idem_key = event.headers.get("idempotency-key")
    if event.http_method != "POST" or not idem_key:
        return next_middleware(app)
    who = caller(app)
    print_ = idempotency.fingerprint(event.http_method, event.path, params(app))

    def produce() -> dict:
        response = next_middleware(app)
        return {"status": response.status_code, "body": response.body, "content_type": response.content_type}

    out = idempotency.run(who.scope, idem_key, print_, produce, app.lambda_context)
    headers = {"Idempotent-Replayed": "true"} if out.get("replayed") else {}
    return Response(out["status"], out.get("content_type") or JSON, out["body"], headers)


def handle(app: APIGatewayRestResolver, event: dict, context) -> dict:
    """Resolve one API Gateway proxy event and stamp the response with a Request-Id."""
    result = app.resolve(event, context)
    request_id = "req_" + secrets.token_hex(8)
    for field in ("headers", "multiValueHeaders"):
        if field in result and result[field] is not None:
            result[field]["Request-Id"] = [request_id] if field == "multiValueHeaders" else request_id
    if "headers" not in result and "multiValueHeaders" not in result:
        result["headers"] = {"Request-Id": request_id}
    return result
