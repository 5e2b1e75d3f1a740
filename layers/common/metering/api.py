"""The HTTP side shared by every API function: resolver, parameters, errors, idempotency.

Each API function builds its resolver with `build_app()`, declares its routes, and hands
events to `handle()`. Errors are Stripe-shaped in one place (`_render`), every response
carries `Request-Id`, and POSTs with `Idempotency-Key` go through `metering.idempotency`.
"""

import base64
import binascii
import json
import secrets
import sys
import zlib
from urllib.parse import urlencode

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response

from metering import idempotency, wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid, unauthorized
from metering.observability import logger

JSON = "application/json"
MAX_BODY_BYTES = 1024 * 1024


def ok(obj: dict, status: int = 200, headers: dict | None = None) -> Response:
    return Response(status, JSON, wire.dumps(obj), headers or None)


# Stripe's v2 error object requires a `code`; errors that have none get one by status.
V2_CODES = {400: "invalid_request", 401: "invalid_api_key", 404: "not_found", 429: "rate_limit"}


def _render(exc: StripeError, path: str = "") -> Response:
    headers = {}
    if exc.should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if exc.should_retry else "false"
    body = exc.body()
    if path.startswith("/v2/") and "code" not in body["error"]:
        fallback = "idempotency_error" if exc.type == "idempotency_error" else None
        body["error"]["code"] = fallback or V2_CODES.get(exc.status, "internal_error")
    return Response(exc.status, JSON, wire.dumps(body), headers)


class StripeResolver(APIGatewayRestResolver):
    """Powertools' resolver whose OpenAPI document also declares the metering routes'
    parameters and bodies (metering.openapi_spec), so fuzzers and clients can use it.

    Powertools' request and response validation is off: the handlers read and check their
    parameters themselves (path parameters are plain strings, bodies and queries are parsed by
    `params`, no route declares a body, query or header parameter, or a return type), so it
    validated nothing, and building it imports pydantic at every cold start. The document is
    still generated as with validation on (its 422 responses and their schemas), unchanged."""

    def get_openapi_schema(self, *args, **kwargs):
        enabled, self._enable_validation = self._enable_validation, True
        try:
            return super().get_openapi_schema(*args, **kwargs)
        finally:
            self._enable_validation = enabled

    def get_openapi_json_schema(self, *args, **kwargs) -> str:
        from metering import openapi_spec

        document = json.loads(super().get_openapi_json_schema(*args, **kwargs))
        return json.dumps(openapi_spec.annotate(document), indent=2, sort_keys=True)


def _pydantic_error(exc: Exception) -> bool:
    """Whether `exc` is a pydantic ValidationError (pydantic is imported only if a handler
    validated with it, so an exception cannot be one when it is not imported)."""
    core = sys.modules.get("pydantic_core")
    return core is not None and isinstance(exc, core.ValidationError)


def build_app() -> APIGatewayRestResolver:
    app = StripeResolver(enable_validation=False)

    def path() -> str:
        try:
            return app.current_event.path or ""
        except Exception:
            return ""

    @app.exception_handler(StripeError)
    def stripe_error(exc: StripeError):
        return _render(exc, path())

    @app.not_found
    def not_found(_exc):
        event = app.current_event
        shown = wire.clip(event.path or "", 200)
        return _render(
            StripeError(f"Unrecognized request URL ({event.http_method}: {shown}).", 404, code="url_invalid"),
            path(),
        )

    @app.exception_handler(Exception)
    def unexpected(exc: Exception):
        if _pydantic_error(exc):  # a model validated outside wire.validate: a 400 naming the param
            return _render(wire.to_stripe_error(exc), path())
        logger.exception("unhandled error")
        return _render(
            StripeError("An unexpected error occurred; retry.", 500, "api_error", should_retry=True), path()
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


def _not_utf8() -> StripeError:
    return invalid("Invalid request body: not valid UTF-8.", "body", "invalid_utf8")


def _raw_body(event) -> str:
    """The body as text: invalid UTF-8 is refused, never replaced."""
    body = event.body or ""
    if event.is_base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise invalid("Invalid request body: bad base64 encoding.", "body") from None
        if len(raw) > MAX_BODY_BYTES:
            raise invalid("The request body is larger than 1 MB.", "body", "request_too_large")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _not_utf8() from None
    try:
        size = len(body.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: bytes that were not UTF-8
        raise _not_utf8() from None
    if size > MAX_BODY_BYTES:
        raise invalid("The request body is larger than 1 MB.", "body", "request_too_large")
    return body


def _query(event) -> dict:
    query = event.multi_value_query_string_parameters or {}
    pairs = [(name, value) for name, values in query.items() for value in (values or [])]
    if not pairs:
        return {}
    try:
        text = urlencode(pairs)
    except UnicodeEncodeError:
        raise invalid("Invalid query string: not valid UTF-8.", "query", "invalid_utf8") from None
    return wire.parse_body(text, None)


def params(app: APIGatewayRestResolver) -> dict:
    """Request parameters: query string for GET, form or JSON body for POST (parsed once)."""
    if "params" in app.context:
        return app.context["params"]
    event = app.current_event
    decoded = _query(event)
    if event.http_method == "POST":
        body = wire.parse_body(_raw_body(event), event.headers.get("content-type"))
        decoded = {**decoded, **body}
    wire.check_unicode(decoded)
    app.append_context(params=decoded)
    return decoded


def idempotency_key(app: APIGatewayRestResolver) -> str | None:
    """The request's `Idempotency-Key` header, if any."""
    return app.current_event.headers.get("idempotency-key") or None


# Routes whose own write carries the Idempotency-Key (meter events: the event item records
# the key and the request's fingerprint), so a replay costs no idempotency record.
SELF_IDEMPOTENT = {"/v1/billing/meter_events", "/v2/billing/meter_events"}


def request_fingerprint(app: APIGatewayRestResolver) -> str:
    """What must match for a request with the same Idempotency-Key to be a replay."""
    event = app.current_event
    return idempotency.fingerprint(event.http_method, event.path, params(app))


def _idempotency_middleware(app: APIGatewayRestResolver, next_middleware) -> Response:
    event = app.current_event
    idem_key = idempotency_key(app)
    if event.http_method != "POST" or not idem_key or event.resource in SELF_IDEMPOTENT:
        if idem_key and len(idem_key) > idempotency.MAX_KEY_LENGTH:
            raise invalid(
                f"Idempotency-Key must be at most {idempotency.MAX_KEY_LENGTH} characters.", "Idempotency-Key"
            )
        return next_middleware(app)
    who = caller(app)
    print_ = request_fingerprint(app)

    def produce() -> dict:
        response = next_middleware(app)
        # Stored compressed: the saved response must fit one DynamoDB item (400 KB) even when
        # it echoes the largest payload the API accepts in escaped JSON.
        packed = base64.b64encode(zlib.compress(response.body.encode("utf-8"), 6)).decode("ascii")
        return {"status": response.status_code, "body_z": packed, "content_type": response.content_type}

    out = idempotency.run(who.scope, idem_key, print_, produce, app.lambda_context)
    headers = {"Idempotent-Replayed": "true"} if out.get("replayed") else {}
    body = out["body"] if "body" in out else zlib.decompress(base64.b64decode(out["body_z"])).decode("utf-8")
    return Response(out["status"], out.get("content_type") or JSON, body, headers)


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
