"""An HTTP front end that behaves like the template's API Gateway REST API.

A request becomes a real API Gateway proxy event: the REQUEST authorizer runs first
(its context lands in requestContext.authorizer), then the route's function. Unknown
routes and denied callers get the template's gateway responses.
"""

import base64
import functools
import json
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl, urlsplit

from metering_local.http11 import Server
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


@functools.lru_cache(maxsize=1024)
def _arn_pattern(resource: str) -> re.Pattern:
    """An IAM resource pattern: `*` any characters, `?` one."""
    parts = re.split(r"([*?])", resource)
    return re.compile("".join({"*": ".*", "?": "."}.get(p) or re.escape(p) for p in parts) + r"\Z")


def policy_allows(result: dict, method_arn: str) -> bool:
    """Whether the authorizer's policy allows invoking `method_arn`: no Deny statement matches
    it and an Allow statement does (IAM evaluation, as API Gateway applies it)."""
    statements = result["policyDocument"]["Statement"]
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        resources = statement.get("Resource", [])
        if isinstance(resources, str):
            resources = [resources]
        if any(_arn_pattern(resource).match(method_arn) for resource in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class Gateway:
    def __init__(self, template: Template, runtime: Runtime):
        self.template = template
        self.runtime = runtime
        self.routes = [(route, route.pattern()) for route in template.routes()]
        self.authorizer = template.authorizer_function()
        self.identity, self.auth_ttl = template.authorizer_identity() if self.authorizer else ([], 0)
        self.identity = self.identity or ["Authorization"]
        self._auth_cache: dict[tuple, tuple[float, dict]] = {}  # identity values -> (expiry, result)
        self._auth_lock = threading.Lock()
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
        """The authorizer's context, or None when the caller is denied.

        As API Gateway: a request without its identity sources (the Authorization header)
        is denied without calling the authorizer, and with `ReauthorizeEvery` > 0 the
        authorizer's answer is cached per identity (the header's value) for that many
        seconds; a cached policy is evaluated against each request's method ARN. A failed
        authorizer (Unauthorized) is not cached.
        """
        if not route.authorized or not self.authorizer:
            return {}
        headers = {k.lower(): v for k, v in event["headers"].items()}
        identity = tuple(headers.get(name.lower()) for name in self.identity)
        if not all(identity):
            return None
        method_arn = f"{ARN_BASE}/{STAGE}/{route.method}{event['path']}"
        result = self._cached(identity)
        if result is None:
            request = {
                **{k: event[k] for k in ("resource", "path", "httpMethod", "headers", "multiValueHeaders")},
                "type": "REQUEST",
                "methodArn": method_arn,
                "queryStringParameters": event["queryStringParameters"],
                "pathParameters": event["pathParameters"],
                "requestContext": event["requestContext"],
            }
            try:
                result = self.runtime.invoke(self.authorizer, request)
                allowed = policy_allows(result, method_arn)
            except Exception:
                return None  # a failed authorizer or a malformed policy: denied, not cached
            self._remember(identity, result)
        else:
            allowed = policy_allows(result, method_arn)
        if not allowed:
            return None
        return {**result.get("context", {}), "principalId": result["principalId"]}

    def _cached(self, identity: tuple) -> dict | None:
        if self.auth_ttl <= 0:
            return None
        with self._auth_lock:
            hit = self._auth_cache.get(identity)
            if hit is None:
                return None
            if hit[0] <= time.monotonic():
                del self._auth_cache[identity]
                return None
            return hit[1]

    def _remember(self, identity: tuple, result: dict) -> None:
        if self.auth_ttl <= 0:
            return
        now = time.monotonic()
        with self._auth_lock:
            if len(self._auth_cache) >= 10_000:  # drop expired answers before growing further
                for key in [k for k, (expiry, _) in self._auth_cache.items() if expiry <= now]:
                    del self._auth_cache[key]
            self._auth_cache[identity] = (now + self.auth_ttl, result)

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


def make_server(gateway: Gateway, host: str, port: int, extra_get: dict | None = None) -> Server:
    """The gateway on an HTTP/1.1 server (keep-alive; one thread per connection)."""
    extra_get = extra_get or {}

    def serve(request) -> tuple[int, dict, bytes]:
        if request.body is None:  # the body's end is unknown: answer, then close
            status, headers, data = _bad_request("Invalid Content-Length header.")
        else:
            split = urlsplit(request.target)
            if request.method == "GET" and split.path in extra_get:
                status, headers, data = extra_get[split.path](dict(parse_qsl(split.query)))
            else:
                status, headers, data = gateway.handle(
                    request.method, request.target, request.header_dict(), request.body
                )
        if not any(name.lower() == "request-id" for name in headers):
            headers = {**headers, "Request-Id": request_id()}  # every answer carries one
        return status, headers, data

    return Server((host, port), serve, server_name="metering-local")


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
