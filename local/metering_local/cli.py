"""`metering-local serve` and `metering-local invoke`: the Docker-free local runtime."""

import argparse
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from metering_local import aws_endpoint, schedule_trigger, sqs_trigger
from metering_local.template import Template

DEFAULT_KEY = "sk_test_local"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Environment:
    """Embedded (or external) AWS endpoint provisioned from the template, env set for handlers."""

    def __init__(self, template: Template, host: str, aws_port: int, endpoint_url: str | None, bucket: str):
        self.moto = None
        if endpoint_url is None:
            self.moto = aws_endpoint.start_moto(host, aws_port)
            endpoint_url = f"http://{host}:{aws_port}"
        self.endpoint_url = endpoint_url
        aws_endpoint.use_endpoint(endpoint_url)
        self.names = aws_endpoint.provision(template, bucket)
        os.environ.update(aws_endpoint.function_environment(template, self.names))
        if self.names.bucket:
            os.environ["UPLOAD_BUCKET"] = self.names.bucket
        os.environ["METERING_LOCAL"] = "1"
        os.environ.setdefault("WEBHOOKS_ALLOW_LOOPBACK", "1")  # local webhook receivers listen on 127.0.0.1
        os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
        os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")

    def register_keys(self, keys: list[str]) -> dict[str, str]:
        from metering.accounts import create_key

        return {key: create_key(secret=key)[1] for key in keys}

    def stop(self):
        if self.moto is not None:
            self.moto.stop()


def serve(args) -> int:
    from metering_local.gateway import Gateway, make_server, openapi_document
    from metering_local.lambda_runtime import Runtime
    from metering_local.triggers import start_triggers

    template = Template.load(args.template)
    env = Environment(template, args.host, args.aws_port, args.endpoint_url, args.upload_bucket)
    accounts = env.register_keys(args.api_key or [DEFAULT_KEY])
    runtime = Runtime(template.functions())
    gateway = Gateway(template, runtime)

    def openapi(_query: dict):
        return 200, {"Content-Type": "application/json"}, json.dumps(openapi_document(runtime)).encode()

    extra = {"/openapi.json": openapi, "/swagger": _swagger_page}
    if os.environ.get("METERING_CLOCK_CONTROL") == "1":
        extra["/_local/clock"] = _clock_control
    server = make_server(gateway, args.host, args.port, extra)
    stop = threading.Event()
    triggers = start_triggers(template, runtime, env.names, stop)
    triggers += schedule_trigger.start(template, runtime, stop, args.schedule_interval)
    triggers += sqs_trigger.start(template, runtime, env.names, stop)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)  # quick to stop
    thread.start()
    api_url = f"http://{args.host}:{server.server_address[1]}"
    print(f"API:          {api_url}", flush=True)
    print(f"Swagger UI:   {api_url}/swagger  (OpenAPI: {api_url}/openapi.json)")
    if any(route.path == "/dashboard" for route in template.routes()):
        print(f"Dashboard:    {api_url}/dashboard  (sign in with an API key below)")
    print(f"AWS endpoint: {env.endpoint_url}")
    if env.names.bucket:
        print(f"Bucket:       s3://{env.names.bucket}/uploads/<account id>/")
    for key, account in accounts.items():
        print(f"API key:      {key}  (account {account})")
    print("Ready. Ctrl-C stops.", flush=True)
    runtime.prestart(_prestart_order(template), stop)  # one warm instance each, in the background

    def _stop(*_):
        stop.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    stop.wait()
    server.shutdown()
    for trigger in triggers:
        trigger.join(timeout=5)
    runtime.close()
    env.stop()
    print("Stopped.", flush=True)
    return 0


def _prestart_order(template: Template) -> list[str]:
    """The authorizer first, then the API functions, then the others."""
    api = {route.function for route in template.routes()}
    names = list(template.functions())
    first = [template.authorizer_function()] if template.authorizer_function() in names else []
    return first + [n for n in names if n in api and n not in first] + [n for n in names if n not in api]


def _clock_control(query: dict):
    """Test hook, only with METERING_CLOCK_CONTROL=1: GET /_local/clock?offset=SECONDS shifts the clock."""
    from metering import clock

    clock.shift(float(query.get("offset", 0)))
    return (
        200,
        {"Content-Type": "application/json"},
        json.dumps({"offset": float(query.get("offset", 0))}).encode(),
    )


def _swagger_page(_query: dict):
    page = (
        "<!doctype html><html><head><title>Metering API</title>"
        '<link rel="stylesheet" href="https://unpkg.com/swagger-ui-dist@5/swagger-ui.css"></head><body>'
        '<div id="ui"></div><script src="https://unpkg.com/swagger-ui-dist@5/swagger-ui-bundle.js"></script>'
        "<script>SwaggerUIBundle({url: '/openapi.json', dom_id: '#ui'});</script></body></html>"
    )
    return 200, {"Content-Type": "text/html"}, page.encode()


def invoke(args) -> int:
    from metering_local.lambda_runtime import Runtime

    template = Template.load(args.template)
    port = args.aws_port or _free_port()
    env = Environment(template, "127.0.0.1", port, args.endpoint_url, args.upload_bucket)
    try:
        env.register_keys(args.api_key or [DEFAULT_KEY])
        event = json.loads(Path(args.event).read_text()) if args.event else {}
        with Runtime(template.functions(), pool_size=1) as runtime:
            result = runtime.invoke(args.function, event)
        print(json.dumps(result, indent=2, default=str))
    finally:
        env.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="metering-local", description=__doc__)
    parser.add_argument("--template", default="template.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "invoke"):
        p = sub.add_parser(name)
        p.add_argument("--api-key", action="append", help="secret key (repeatable; each is its own account)")
        p.add_argument(
            "--endpoint-url", help="use this DynamoDB/S3-compatible endpoint instead of embedded moto"
        )
        p.add_argument("--upload-bucket", default="metering-uploads")
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=3000)
            p.add_argument("--aws-port", type=int, default=4566)
            p.add_argument(
                "--schedule-interval",
                type=float,
                help="run scheduled functions every N seconds instead of their template rate",
            )
        else:
            p.add_argument("function", help="logical id of the function in template.yaml")
            p.add_argument("--event", "-e", help="event JSON file, e.g. events/create_meter.json")
            p.add_argument("--aws-port", type=int, default=0)
    args = parser.parse_args(argv)
    return serve(args) if args.command == "serve" else invoke(args)


if __name__ == "__main__":
    sys.exit(main())
