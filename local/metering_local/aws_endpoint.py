"""The AWS side of the local runtime: an embedded moto server (or another endpoint) with
the tables, bucket and event bus of template.yaml."""

import functools
import os
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

from metering_local.template import Template

REGION = "us-east-1"


@dataclass
class Names:
    """Physical names of the template's resources in the local endpoint."""

    tables: dict[str, str]
    bucket: str | None
    buses: dict[str, str]
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL (what Ref gives)

    def resolve(self, value, parameters: dict):
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            return (
                self.tables.get(ref)
                or self.buses.get(ref)
                or self.queues.get(ref)
                or parameters.get(ref)
                or (self.bucket if ref.endswith("Bucket") else ref)
            )
        return value


def start_moto(host: str, port: int) -> "MotoEndpoint":
    """moto for every service on host:port, DynamoDB's data calls answered directly (MotoEndpoint)."""
    from metering_local import moto_atomic

    moto_atomic.install()
    _lighten_moto()
    return MotoEndpoint(host, port).start()


def use_endpoint(url: str) -> None:
    """Point boto3 (ours and the handlers') at the endpoint, with dummy credentials if none."""
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    os.environ.setdefault("AWS_REGION", os.environ["AWS_DEFAULT_REGION"])


def create_table(client, name: str, props: dict) -> None:
    kwargs = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    try:
        client.create_table(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def provision(template: Template, bucket: str | None, prefix: str = "") -> Names:
    """Create every table, the upload bucket and the buses; idempotent."""
    names = Names(
        {logical: prefix + logical for logical in template.tables()},
        bucket if template.buckets() or bucket else None,
        {logical: prefix + logical for logical in template.buses()},
    )
    dynamodb = boto3.client("dynamodb")
    for logical, props in template.tables().items():
        create_table(dynamodb, names.tables[logical], props)
    if names.bucket:
        s3 = boto3.client("s3")
        try:
            s3.create_bucket(Bucket=names.bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    events = boto3.client("events")
    for name in names.buses.values():
        try:
            events.create_event_bus(Name=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
    sqs = boto3.client("sqs")
    for logical in template.of_type("AWS::SQS::Queue"):
        names.queues[logical] = sqs.create_queue(QueueName=prefix + logical)["QueueUrl"]
    return names


def function_environment(template: Template, names: Names) -> dict[str, str]:
    """The union of every function's environment, with references resolved."""
    parameters = {name: str(p.get("Default", "")) for name, p in template.parameters.items()}
    env: dict[str, str] = {}
    for fn in template.functions().values():
        for key, value in fn.environment.items():
            env[key] = str(names.resolve(value, parameters))
    return env


# --- the embedded endpoint -----------------------------------------------------------------

# DynamoDB's data-plane calls (and the stream reads) are answered without moto's generic
# request machinery. For each request moto's WSGI dispatcher scans its service modules
# to find the backend, inspects the handler class for its method names, parses the JSON
# body against the botocore model and serialises the answer against the model again:
# ~3 ms of CPU for a one-item PutItem, most of it not the backend's work. Here the same
# handler method of moto runs on the JSON body and its result is written as JSON; errors
# still go through moto's own serialisation. Everything else (other services,
# control-plane calls, binary attribute values, compressed bodies) goes to moto's WSGI
# application unchanged. The HTTP server keeps connections open (werkzeug's closes each
# one after its response, so every boto3 call of a function paid for a new connection).
_FAST_ACTIONS = {
    "DynamoDB_20120810": {
        "GetItem": "get_item",
        "PutItem": "put_item",
        "UpdateItem": "update_item",
        "DeleteItem": "delete_item",
        "Query": "query",
        "Scan": "scan",
        "BatchGetItem": "batch_get_item",
        "BatchWriteItem": "batch_write_item",
        "TransactGetItems": "transact_get_items",
        "TransactWriteItems": "transact_write_items",
        "ExecuteStatement": "execute_statement",
        "BatchExecuteStatement": "batch_execute_statement",
    },
    "DynamoDBStreams_20120810": {
        "DescribeStream": "describe_stream",
        "GetShardIterator": "get_shard_iterator",
        "GetRecords": "get_records",
        "ListStreams": "list_streams",
    },
}
_BINARY = (b'"B"', b'"BS"')  # binary attribute values: moto's parser decodes them, so leave those to it
_JSON_TYPE = "application/x-amz-json-1.0"


def _lighten_moto() -> None:
    """Remove per-request work of moto's server that does not depend on the request.

    - Its dispatcher lists moto's package directory (a stat per service) twice per request
      to recognise a service name in the Host header; the list is cached here.
    - Each handler call inspects the handler class for its method names; cached per class.
    - An item's attributes are checked against the 400 KB limit as each one is added, by
      summing the sizes of all the attributes already there: O(n^2) for an item of n
      attributes (5 ms for a v1 meter event item). Since sizes are never negative, the
      last check is the largest, so building the item and checking once is the same test.
    """
    import functools

    from moto import backends
    from moto.core import responses
    from moto.dynamodb.models import dynamo_type

    if getattr(dynamo_type, "_metering_light", False):
        return
    backends.list_of_moto_modules = functools.cache(lambda: list(_original_modules()))
    responses.method_names_from_class = functools.cache(responses.method_names_from_class)

    def item_init(self, hash_key, range_key, attrs):
        self.hash_key = hash_key
        self.range_key = range_key
        self.attrs = dynamo_type.LimitedSizeDict()
        total = 0
        for key, value in attrs.items():
            value = dynamo_type.DynamoType(value)
            dict.__setitem__(self.attrs, key, value)
            total += dynamo_type.bytesize(key) + value.size()
        if total > 405000:  # LimitedSizeDict's limit
            raise dynamo_type.ItemSizeTooLarge

    dynamo_type.Item.__init__ = item_init
    dynamo_type._metering_light = True


def _original_modules():
    import moto

    path = os.path.dirname(moto.__file__)
    for backend in sorted(os.listdir(path)):
        if os.path.isdir(os.path.join(path, backend)) and not backend.startswith("__"):
            yield backend


def _json_default(value):
    import datetime

    if isinstance(value, datetime.datetime):
        return value.timestamp()  # the JSON protocol's timestamps: epoch seconds
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class MotoEndpoint:
    """moto's server on an HTTP/1.1 keep-alive server, with the DynamoDB fast path."""

    def __init__(self, host: str, port: int):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        from metering_local.http11 import Server

        self.moto_app = DomainDispatcherApplication(create_backend_app)
        self.server = Server((host, port), self.handle, server_name="moto")
        self.thread = None

    def start(self) -> "MotoEndpoint":
        import threading

        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), daemon=True, name="aws-endpoint"
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join()

    def handle(self, request):
        if request.body is None:
            request.close = True
            return 400, {"Content-Type": "text/plain"}, b"Invalid Content-Length"
        api, _, action = (request.header("x-amz-target") or "").partition(".")
        method = _FAST_ACTIONS.get(api, {}).get(action)
        if (
            method is not None
            and request.method == "POST"
            and request.header("content-encoding", "identity") == "identity"
            and not any(marker in request.body for marker in _BINARY)
        ):
            answer = fast_answer(api, method, request)
            if answer is not None:
                status, headers, body = answer
                return status, headers, body.encode("utf-8") if isinstance(body, str) else body
        return self.wsgi(request)

    def wsgi(self, request):
        """Run moto's WSGI application on the request, as werkzeug's server (and moto's handler) would."""
        import io
        import sys
        from urllib.parse import unquote, urlsplit

        from moto.moto_server.werkzeug_app import (
            PRESERVED_HEADER_NAMES_ENVIRON_KEY,
            environ_key_for_header,
            should_preserve_original_header_name,
        )

        url = urlsplit(request.target)
        path = url.path if not (not url.scheme and url.netloc) else f"/{url.netloc}{url.path}"
        environ = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(request.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "SERVER_SOFTWARE": "moto",
            "REQUEST_METHOD": request.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path).encode("utf-8").decode("latin-1"),
            "QUERY_STRING": url.query.encode("utf-8").decode("latin-1"),
            "REQUEST_URI": request.target,
            "RAW_URI": request.target,
            "REMOTE_ADDR": request.client[0],
            "REMOTE_PORT": request.client[1],
            "SERVER_NAME": request.server[0],
            "SERVER_PORT": str(request.server[1]),
            "SERVER_PROTOCOL": request.version,
        }
        for name, value in request.headers:
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            if key == "TRANSFER_ENCODING":
                continue  # the body is already de-chunked
            if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                key = f"HTTP_{key}"
                if key in environ:
                    value = f"{environ[key]},{value}"
            environ[key] = value
        environ["CONTENT_LENGTH"] = str(len(request.body))
        if url.scheme and url.netloc:
            environ["HTTP_HOST"] = url.netloc
        dashed = {environ_key_for_header(name) for name, _ in request.headers if "_" not in name}
        names: dict[str, str] = {}
        values: dict[str, list[str]] = {}
        for name, value in request.headers:
            if not should_preserve_original_header_name(name):
                continue
            key = environ_key_for_header(name)
            if key in dashed:
                continue
            names.setdefault(key, name)
            values.setdefault(key, []).append(value)
        for key, key_values in values.items():
            environ[key] = ",".join(key_values)
        environ[PRESERVED_HEADER_NAMES_ENVIRON_KEY] = names

        answer: dict = {}

        def start_response(status, headers, exc_info=None):
            answer["status"], answer["headers"] = int(status.split(" ", 1)[0]), list(headers)
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        result = self.moto_app(environ, start_response)
        try:
            for data in result:
                chunks.append(data)
        finally:
            if hasattr(result, "close"):
                result.close()
        return answer["status"], answer["headers"], b"".join(chunks)


def fast_answer(api: str, method: str, request):
    """(status, headers, body) from moto's DynamoDB (Streams) handler method, or None to let moto answer."""
    import json

    from moto.core.exceptions import ServiceException
    from moto.core.responses import ActionResult
    from werkzeug.exceptions import HTTPException

    try:
        params = json.loads(request.body or b"{}")
    except ValueError:
        return None
    if not isinstance(params, dict):
        return None
    handler = _handler(api, request)
    handler.params = params
    # DynamoHandler reads its (parsed) parameters from .body; the streams handler parses .body itself.
    handler.body = params if api == "DynamoDB_20120810" else request.body.decode("utf-8")
    headers = {"Content-Type": _JSON_TYPE, "x-amzn-RequestId": _request_id()}
    try:
        result = getattr(handler, method)()
    except ServiceException as exc:
        status, error_headers, body = handler.serialized(ActionResult(exc))
        return status, {**error_headers, "x-amzn-RequestId": headers["x-amzn-RequestId"]}, body
    except HTTPException as exc:
        return exc.code, {**headers, **dict(exc.get_headers() or [])}, exc.description
    if not isinstance(result, ActionResult):
        return None if result is None else _legacy(result, headers)
    answer = result.result
    if isinstance(answer, dict):  # as moto's serialiser: only the output shape's members, no nulls
        members = _output_members(api, method)
        answer = {k: v for k, v in answer.items() if k in members and v is not None}
    try:
        body = json.dumps(answer, default=_json_default, separators=(",", ":"))
    except TypeError:
        status, _headers, body = handler.serialized(result)  # something only moto's serialiser can write
        return status, {**_headers, **headers}, body
    return 200, headers, body.encode("utf-8")


@functools.cache
def _output_members(api: str, method: str) -> frozenset:
    from moto.core.utils import get_service_model

    service = get_service_model("dynamodb" if api == "DynamoDB_20120810" else "dynamodbstreams")
    action = next(a for a, m in _FAST_ACTIONS[api].items() if m == method)
    shape = service.operation_model(action).output_shape
    return frozenset(shape.members) if shape is not None else frozenset()


def _request_id() -> str:
    import uuid

    return uuid.uuid4().hex


def _handler(api: str, request):
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    handler = DynamoHandler() if api == "DynamoDB_20120810" else DynamoDBStreamsHandler()
    access_key, region = _credential(request.header("authorization") or "")
    handler.region = region or REGION
    handler.current_account = _account(access_key, request)
    handler.querystring = {}
    handler.uri_match = {}
    handler.headers = {
        "X-Amz-Target": request.header("x-amz-target") or "",
        "Content-Type": request.header("content-type") or _JSON_TYPE,
    }
    handler.response_headers = {"server": "amazon.com"}
    return handler


def _legacy(result, headers: dict):
    if isinstance(result, str):
        return 200, headers, result.encode("utf-8")
    if len(result) == 2:
        body, extra = result
        status = int(extra.get("status", 200))
    else:
        status, extra, body = result
    extra = {k: v for k, v in extra.items() if k != "status"}
    return status, {**headers, **extra}, body.encode("utf-8") if isinstance(body, str) else body


def _credential(authorization: str) -> tuple[str, str | None]:
    """(access key, region) of a SigV4 Authorization header."""
    try:
        scope = authorization.split(",")[0].split()[1].split("=", 1)[1]
        access_key, _date, region, *_ = scope.split("/")
        return access_key, region
    except (IndexError, ValueError):
        return "AKIAEXAMPLE", None


def _account(access_key: str, request) -> str:
    """The account moto picks for a request (BaseResponse.get_current_account)."""
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"]
    if request.header("x-moto-account-id"):
        return request.header("x-moto-account-id")
    from moto.iam.models import get_account_id_from

    return get_account_id_from(access_key)
