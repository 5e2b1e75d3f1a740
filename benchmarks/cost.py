"""Dollars per million events, all-in, computed from the units the handlers really use.

Each scenario drives the real Lambda handlers (loaded from template.yaml as the local
runner loads them) against moto: the authorizer where API Gateway calls it, the ingest
function with API Gateway events, the bulk function with an S3 notification, and the
aggregate function over the events table's stream until it is drained. Botocore hooks
on every client count what AWS would bill:

- DynamoDB write request units from each written item's size (1 per KB; 2 per KB
  inside a transaction), read units from the items read (1 per 4 KB strongly
  consistent, 0.5 eventually; at least one per key asked), and the bytes left stored
  (event items for their 45-day retention, ledger items for 75 days);
- Lambda invocations per function, and GB-seconds from the template's memory with a
  duration model (below): the bench machine runs moto in process, so wall time here
  says nothing about Lambda's;
- API Gateway requests, S3 requests and EventBridge entries.

Duration model (an assumption, stated in docs/performance.md): every DynamoDB, S3, SQS
or EventBridge request an invocation makes waits 5 ms, one after the other (ingest's
concurrent writes are counted as if sequential, which overstates them), plus 1 ms per
invocation and 0.1 ms per event of CPU.
"""

import gzip
import json
import math
import tempfile
import threading
import time
from collections import Counter
from copy import deepcopy
from pathlib import Path

from benchmarks.common import DAY, ROOT, Figure, moto_account

# us-east-1 on-demand prices (AWS pricing pages, 2025; DynamoDB after its Nov 2024 cut)
PRICE = {
    "wru": 0.625 / 1e6,
    "rru": 0.125 / 1e6,
    "gb_month": 0.25,
    "lambda_request": 0.20 / 1e6,
    "gb_second": 0.0000133334,  # arm64
    "rest_api": 3.50 / 1e6,
    "http_api": 1.00 / 1e6,
    "s3_get": 0.0004 / 1000,
    "s3_put": 0.005 / 1000,
    "eventbridge": 1.00 / 1e6,
}
CALL_SECONDS = 0.005
INVOKE_CPU, EVENT_CPU = 0.001, 0.0001
EVENT_DAYS, LEDGER_DAYS = 45, 75
TARGETS = {"v2 stream": 1.00, "bulk file": 1.00, "v1 events": 2.00}


def _size(value: dict) -> int:
    """DynamoDB's size of one attribute value (AttributeValue JSON)."""
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return (len(v.strip("-").replace(".", "").lstrip("0")) + 1) // 2 + 1
    if kind == "B":
        return len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(len(k.encode()) + _size(x) for k, x in v.items())
    if kind == "L":
        return 3 + sum(1 + _size(x) for x in v)
    return sum(len(x) for x in v)  # sets


def item_size(item: dict) -> int:
    return sum(len(k.encode()) + _size(v) for k, v in item.items())


def _units(size: int, per: int) -> int:
    return max(1, math.ceil(size / per))


class Meter:
    """Counts billable units on every boto3 client created while it is installed."""

    def __init__(self, events_table: str):
        self.events_table = events_table
        self.wru = 0.0
        self.rru = 0.0
        self.stored_event_bytes = 0
        self.stored_ledger_bytes = 0
        self.requests: Counter = Counter()  # by service.operation
        self.eventbridge_entries = 0
        self._per_invocation = 0
        self._consistent: dict[int, bool] = {}

    def install(self):
        """Hook boto3's default session, so every client created from now on is counted
        (the shared clients and the ingest path's own batch-write client alike)."""
        import boto3

        from metering import aws

        session = boto3._get_default_session()._session
        session.register("before-parameter-build", self._before, unique_id="cost-before")
        session.register("after-call", self._after, unique_id="cost-after")
        aws.reset()
        return self

    def close(self):
        import boto3

        session = boto3._get_default_session()._session
        session.unregister("before-parameter-build", unique_id="cost-before")
        session.unregister("after-call", unique_id="cost-after")

    def take_calls(self) -> int:
        n, self._per_invocation = self._per_invocation, 0
        return n

    def _write(self, item: dict, factor: int, table: str) -> None:
        size = item_size(item)
        self.wru += factor * _units(size, 1024)
        pk = item.get("pk", {}).get("S", "")
        if table == self.events_table:
            self.stored_event_bytes += size + 100  # plus DynamoDB's per-item overhead
        elif pk.startswith("L#"):
            self.stored_ledger_bytes += size + 100

    def _before(self, model, params, context, **_):
        service = model.service_model.service_name
        op = model.name
        self.requests[f"{service}.{op}"] += 1
        self._per_invocation += 1
        if service == "eventbridge" or service == "events":
            self.eventbridge_entries += len(params.get("Entries", []))
        if service != "dynamodb":
            return
        if op == "PutItem":
            self._write(params["Item"], 1, params["TableName"])
        elif op == "UpdateItem" or op == "DeleteItem":
            self.wru += 1
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                if kind == "Put":
                    self._write(body["Item"], 2, body["TableName"])
                elif kind in ("Update", "Delete"):
                    self.wru += 2
                else:
                    self.rru += 2  # ConditionCheck: a transactional read
        elif op == "BatchWriteItem":
            for table, writes in params["RequestItems"].items():
                for w in writes:
                    if "PutRequest" in w:
                        self._write(w["PutRequest"]["Item"], 1, table)
                    else:
                        self.wru += 1
        elif op == "BatchExecuteStatement":
            for statement in params["Statements"]:
                if hasattr(statement, "decoded"):  # the hot path's statements, already JSON
                    statement = statement.decoded()
                if statement["Statement"].lstrip().upper().startswith("INSERT"):
                    names = statement["Statement"].split("{", 1)[1].split("'")[1::2]
                    item = dict(zip(names, statement.get("Parameters", []), strict=False))
                    self._write(item, 1, self.events_table)
                else:
                    self.rru += 1
        asked = [r for r in params.get("RequestItems", {}).values() if isinstance(r, dict)]
        context["metered_consistent"] = bool(
            params.get("ConsistentRead") or any(r.get("ConsistentRead") for r in asked)
        )
        context["metered_keys"] = sum(len(r.get("Keys", [])) for r in asked)

    def _after(self, http_response, parsed, model, context, **_):
        if model.service_model.service_name != "dynamodb":
            return
        factor = 1.0 if context.get("metered_consistent") else 0.5
        op = model.name
        if op == "GetItem":
            self.rru += factor * _units(item_size(parsed.get("Item") or {}), 4096)
        elif op == "BatchGetItem":
            found = [i for items in parsed.get("Responses", {}).values() for i in items]
            self.rru += factor * sum(_units(item_size(i), 4096) for i in found)
            self.rru += factor * max(0, context.get("metered_keys", 0) - len(found))  # keys not found
        elif op in ("Query", "Scan"):
            size = sum(item_size(i) for i in parsed.get("Items", []))
            self.rru += factor * _units(size, 4096)


class Functions:
    """The template's handlers, invoked in process; counts invocations and modelled seconds."""

    def __init__(self, meter: Meter):
        from metering_local.lambda_runtime import LambdaContext, load_handler
        from metering_local.template import Template

        self.meter = meter
        self.template = Template.load(ROOT / "template.yaml")
        self.functions = self.template.functions()
        self._handlers = {}
        self._context = LambdaContext
        self._load = load_handler
        self.invocations: Counter = Counter()
        self.gb_seconds = 0.0

    def invoke(self, logical_id: str, event: dict, events: int = 1):
        if logical_id not in self._handlers:
            self._handlers[logical_id] = self._load(self.functions[logical_id], 1)
        fn = self.functions[logical_id]
        self.meter.take_calls()
        out = self._handlers[logical_id](event, self._context(logical_id, fn.timeout))
        seconds = self.meter.take_calls() * CALL_SECONDS + INVOKE_CPU + events * EVENT_CPU
        self.invocations[logical_id] += 1
        self.gb_seconds += seconds * self.memory_mb(logical_id) / 1024
        return out

    def memory_mb(self, logical_id: str) -> int:
        props = self.template.resources[logical_id]["Properties"]
        default = self.template.globals.get("MemorySize", 128)
        return int(props.get("MemorySize", default))


def _api_event(sample: str, body: str, headers: dict, account_id: str | None) -> dict:
    event = deepcopy(json.loads((ROOT / "events" / sample).read_text()))
    event["body"] = body
    event["headers"].update(headers)
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    if account_id:
        event["requestContext"]["authorizer"] = {
            "account_id": account_id,
            "livemode": "true",
            "principalId": account_id,
        }
    return event


def _drain(fns: Functions, names) -> None:
    """Deliver the events table's stream to the aggregate function until nothing is left."""
    from metering_local.stream_trigger import Mapping, StreamPoller

    def invoke(event):
        return fns.invoke("AggregateFunction", event, len(event["Records"]))

    props = fns.template.resources["AggregateFunction"]["Properties"]["Events"]["EventsStream"]["Properties"]
    mapping = Mapping.from_properties(props)
    StreamPoller(names.tables["EventsTable"], invoke, mapping, threading.Event(), interval=0).settle()


def _dollars(meter: Meter, fns: Functions, events: int, api_requests: int) -> dict:
    per = 1e6 / events
    months_event, months_ledger = EVENT_DAYS / 30, LEDGER_DAYS / 30
    s3 = sum(n for k, n in meter.requests.items() if k.startswith("s3."))
    s3_puts = sum(n for k, n in meter.requests.items() if k.startswith("s3.Put"))
    return {
        "DynamoDB writes": meter.wru * PRICE["wru"] * per,
        "DynamoDB reads": meter.rru * PRICE["rru"] * per,
        "DynamoDB storage": (
            meter.stored_event_bytes * months_event + meter.stored_ledger_bytes * months_ledger
        )
        / 1e9
        * PRICE["gb_month"]
        * per,
        "Lambda requests": sum(fns.invocations.values()) * PRICE["lambda_request"] * per,
        "Lambda GB-s": fns.gb_seconds * PRICE["gb_second"] * per,
        "API Gateway (REST)": api_requests * PRICE["rest_api"] * per,
        "S3 and EventBridge": (
            (s3 - s3_puts) * PRICE["s3_get"]
            + s3_puts * PRICE["s3_put"]
            + meter.eventbridge_entries * PRICE["eventbridge"]
        )
        * per,
    }


def _figures(name: str, parts: dict, meter: Meter, events: int, api_requests: int) -> list:
    total = sum(parts.values())
    target = TARGETS.get(name)
    figures = [
        Figure(
            "cost",
            f"{name}: $ per million events",
            total,
            "$",
            f"<= ${target:.2f}" if target else "",
            total <= target if target else None,
        )
    ]
    for part, dollars in parts.items():
        figures.append(Figure("cost", f"{name}: {part}", dollars, "$ per million"))
    figures.append(Figure("cost", f"{name}: write units", meter.wru / events, "WRU per event"))
    figures.append(Figure("cost", f"{name}: read units", meter.rru / events, "RRU per event"))
    if api_requests:
        http = total - parts["API Gateway (REST)"] + api_requests * PRICE["http_api"] * 1e6 / events
        figures.append(Figure("cost", f"{name}: total with an HTTP API instead", http, "$ per million"))
    return figures


def _setup(names):
    from metering import meters
    from metering.accounts import Principal, create_key

    # live mode: production traffic (test mode also reads the test-clock guard with the meter)
    secret, account_id = create_key(secret=f"sk_live_cost{time.monotonic_ns()}")
    who = Principal(account_id, True)
    params = {"display_name": "tokens", "event_name": "ai_tokens", "default_aggregation": {"formula": "sum"}}
    params["value_settings"] = {"event_payload_key": "tokens"}
    meters.create(who, params)
    return secret, who


def stream_scenario(count: int, spread: bool) -> list:
    """v2 stream requests of 100 events; busy customers, or every event its own customer-minute."""
    with moto_account() as names:
        secret, who = _setup(names)
        meter = Meter(names.tables["EventsTable"]).install()
        fns = Functions(meter)
        session = fns.invoke(
            "IngestFunction", _api_event("create_meter_event_session.json", None, {}, who.account_id)
        )
        token = json.loads(session["body"])["authentication_token"]
        now = int(time.time())
        base = now - now % DAY - DAY
        for r in range(count // 100):
            events = []
            for i in range(100):
                n = r * 100 + i
                customer = f"cus_{n}" if spread else f"cus_{n % 20}"
                ts = base + (n * 61 if spread else n // 20)  # busy: each customer one event a second
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
                events.append(
                    {
                        "event_name": "ai_tokens",
                        "identifier": f"s{n}",
                        "timestamp": stamp,
                        "payload": {"stripe_customer_id": customer, "tokens": str(n % 9 + 1)},
                    }
                )
            body, auth = json.dumps({"events": events}), {"Authorization": f"Bearer {token}"}
            event = _api_event("meter_event_stream.json", body, auth, None)
            out = fns.invoke("IngestFunction", event, 100)
            assert out["statusCode"] == 200, out
        _drain(fns, names)
        meter.close()
        label = "v2 stream, each event its own customer-minute" if spread else "v2 stream"
        return _figures(label, _dollars(meter, fns, count, count // 100), meter, count, count // 100)


def v1_scenario(count: int) -> list:
    """v1 requests from the SDK: the authorizer, then the ingest function, each with an Idempotency-Key."""
    from urllib.parse import urlencode

    with moto_account() as names:
        secret, who = _setup(names)
        meter = Meter(names.tables["EventsTable"]).install()
        fns = Functions(meter)
        authorizer = json.loads((ROOT / "events" / "authorizer.json").read_text())
        authorizer["headers"]["Authorization"] = f"Bearer {secret}"
        now = int(time.time())
        base = now - now % DAY - DAY
        for n in range(count):
            policy = fns.invoke("AuthorizerFunction", authorizer)
            assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow", policy
            body = urlencode(
                {
                    "event_name": "ai_tokens",
                    "timestamp": str(base + n // 20),
                    "payload[stripe_customer_id]": f"cus_{n % 20}",
                    "payload[tokens]": str(n % 9 + 1),
                }
            )
            event = _api_event(
                "create_meter_event.json", body, {"Idempotency-Key": f"cost-{n}"}, who.account_id
            )
            out = fns.invoke("IngestFunction", event)
            assert out["statusCode"] == 200, out
        _drain(fns, names)
        meter.close()
        return _figures("v1 events", _dollars(meter, fns, count, count), meter, count, count)


def bulk_scenario(rows: int) -> list:
    """One gzip CSV through the bulk function (S3 notification), then aggregated."""
    import boto3

    with moto_account() as names:
        secret, who = _setup(names)
        now = int(time.time())
        base = now - now % DAY - DAY
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "rows.csv.gz"
            with gzip.open(path, "wt", newline="") as out:
                out.write("identifier,timestamp,event_name,payload_stripe_customer_id,payload_tokens\n")
                for i in range(rows):
                    out.write(f"b{i},{base + i // 20},ai_tokens,cus_{i % 20},{i % 9 + 1}\n")
            key = f"uploads/{who.account_id}/live/rows.csv.gz"
            s3 = boto3.client("s3")
            s3.upload_file(str(path), "metering-uploads", key)
            etag = s3.head_object(Bucket="metering-uploads", Key=key)["ETag"]
        meter = Meter(names.tables["EventsTable"]).install()
        fns = Functions(meter)
        event = {
            "Records": [
                {"s3": {"bucket": {"name": "metering-uploads"}, "object": {"key": key, "eTag": etag}}}
            ]
        }
        pending = [event]
        while pending:  # the function's continuations (self-invocations), followed as the runner does
            out = fns.invoke("BulkUploadFunction", pending.pop(0), rows)
            if isinstance(out, dict):
                pending.extend(out.get("continuations") or [])
        _drain(fns, names)
        meter.close()
        return _figures("bulk file", _dollars(meter, fns, rows, 0), meter, rows, 0)


def run() -> list:
    figures = []
    figures += stream_scenario(2000, spread=False)
    figures += stream_scenario(1000, spread=True)
    figures += v1_scenario(300)
    figures += bulk_scenario(5000)
    return figures
