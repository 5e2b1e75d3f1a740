"""An HTTP front end that behaves like the template's API Gateway REST API.

A request becomes a real API Gateway proxy event: the REQUEST authorizer runs first
(its context lands in requestContext.authorizer), then the route's function. Unknown
routes and denied callers get the template's gateway responses.
"""

import base64
import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from metering_local.lambda_runtime import Runtime
from metering_local.template import Route, Template

STAGE = "local"
API_ID = "localapi"
ARN_BASE = f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}"


def request_id() -> str:
    return "req_" + secrets.token_hex(8)


def _header_value(value: str) -> str | None:
    """A gateway response header: a quoted literal, or `context.requestId` (a request id)."""
    value = str(value)
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if value == "context.requestId":
        return request_id()
    return None  # other mappings are not emulated


def _gateway_response(template: Template, kind: str, default_status: int) -> tuple[int, dict, bytes]:
    responses = template.gateway_responses()
    spec = responses.get(kind) or responses.get(f"DEFAULT_{str(default_status)[0]}XX", {})
    status = int(spec.get("StatusCode", default_status))
    headers = {}
    for name, value in spec.get("ResponseParameters", {}).get("Headers", {}).items():
        mapped = _header_value(value)
        if mapped is not None:
            headers[name] = mapped
    body = spec.get("ResponseTemplates", {}).get("application/json", json.dumps({"message": kind}))
    return status, headers, body.encode("utf-8")


def _bad_request(message: str) -> tuple[int, dict, bytes]:
    body = {"error": {"type": "invalid_request_error", "code": "invalid_request", "message": message}}
    return 400, {"Content-Type": "application/json"}, json.dumps(body).encode()


def proxy_event(route: Route, method: str, raw_path: str, headers: dict, body: bytes, params: dict) -> dict:
    split = urlsplit(raw_path)
    query = parse_qsl(split.query, keep_blank_values=True)
    multi_query: dict[str, list[str]] = {}
    for name, value in query:
        multi_query.setdefault(name, []).append(value)
    try:
        text, b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, b64 = base64.b64encode(body).decode(), True
    return {
        "resource": route.path,
        "path": split.path,
        "httpMethod": method,
        "headers": dict(headers),
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": f"/{STAGE}{split.path}",
            "stage": STAGE,
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "accountId": "123456789012",
            "apiId": API_ID,
            "identity": {"sourceIp": "127.0.0.1"},
        },
        "body": text if body else None,
        "isBase64Encoded": b64,
    }


class Gateway:
    def __init__(self, template: Template, runtime: Runtime):
        self.template = template
        self.runtime = runtime
        self.routes = [(route, route.pattern()) for route in template.routes()]
        self.authorizer = template.authorizer_function()
        self.openapi = None

    def match(self, method: str, path: str):
        allowed = False
        for route, pattern in self.routes:
            found = pattern.match(path)
            if found:
                allowed = True
                if route.method == method:
                    return route, found.groupdict()
        return None, allowed

    def authorize(self, route: Route, event: dict) -> dict | None:
        """The authorizer's context, or None when the caller is denied."""
        if not route.authorized or not self.authorizer:
            return {}
        if not any(k.lower() == "authorization" and v for k, v in event["headers"].items()):
            return None
        request = {
            **{k: event[k] for k in ("resource", "path", "httpMethod", "headers", "multiValueHeaders")},
            "type": "REQUEST",
            "methodArn": f"{ARN_BASE}/{STAGE}/{route.method}{event['path']}",
            "queryStringParameters": event["queryStringParameters"],
            "pathParameters": event["pathParameters"],
            "requestContext": event["requestContext"],
        }
        try:
            result = self.runtime.invoke(self.authorizer, request)
        except Exception:
            return None
        statement = result["policyDocument"]["Statement"][0]
        if statement["Effect"] != "Allow":
            return None
        return {**result.get("context", {}), "principalId": result["principalId"]}

    def handle(self, method: str, raw_path: str, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        path = urlsplit(raw_path).path
        route, params = self.match(method, path)
        if route is None:
            return _gateway_response(self.template, "MISSING_AUTHENTICATION_TOKEN", 403)
        event = proxy_event(route, method, raw_path, headers, body, params)
        context = self.authorize(route, event)
        if context is None:
            return _gateway_response(self.template, "UNAUTHORIZED", 401)
        event["requestContext"]["authorizer"] = context or None
        try:
            result = self.runtime.invoke(route.function, event)
        except Exception:
            return _gateway_response(self.template, "DEFAULT_5XX", 502)
        out_headers = dict(result.get("headers") or {})
        for name, values in (result.get("multiValueHeaders") or {}).items():
            out_headers[name] = ", ".join(values)
        data = result.get("body") or ""
        raw = base64.b64decode(data) if result.get("isBase64Encoded") else data.encode("utf-8")
        return int(result.get("statusCode", 200)), out_headers, raw


def make_server(gateway: Gateway, host: str, port: int, extra_get: dict | None = None) -> ThreadingHTTPServer:
    extra_get = extra_get or {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self):
            length_header = (self.headers.get("Content-Length") or "0").strip()
            if not length_header.isascii() or not length_header.isdigit():
                self.close_connection = True  # the body's end is unknown: answer, then close
                status, headers, data = _bad_request("Invalid Content-Length header.")
            else:
                length = int(length_header)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                if self.command == "GET" and path in extra_get:
                    query = dict(parse_qsl(urlsplit(self.path).query))
                    status, headers, data = extra_get[path](query)
                else:
                    headers_in = {k: v for k, v in self.headers.items()}
                    status, headers, data = gateway.handle(self.command, self.path, headers_in, body)
            if not any(name.lower() == "request-id" for name in headers):
                headers = {**headers, "Request-Id": request_id()}  # every answer carries one
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() not in ("content-length", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

    server = _Server((host, port), Handler)
    server.daemon_threads = True
    return server


class _Server(ThreadingHTTPServer):
    # The listen backlog: the default (5) resets connections when dozens of clients connect
    # at once; each accepted connection gets its own thread.
    request_queue_size = 256


def openapi_document(runtime: Runtime) -> dict:
    """One OpenAPI document merged from every API function's Powertools resolver."""
    merged: dict = {"openapi": "3.0.3", "info": {"title": "Metering API", "version": "1"}, "paths": {}}
    pools = [
        pool
        for pool in runtime.pools.values()
        if any(event.get("Type") == "Api" for event in pool.fn.events.values())
    ]
    with ThreadPoolExecutor(max(1, len(pools))) as executor:  # each in one of its function's instances
        texts = list(executor.map(lambda pool: pool.openapi_json(), pools))
    for text in texts:
        if text is not None:
            schema = json.loads(text)
            for path, spec in schema.get("paths", {}).items():
                merged["paths"].setdefault(path, {}).update(spec)
            merged.setdefault("components", {}).update(schema.get("components", {}))
    return merged
