"""Handler CPU: our code per request with every AWS call answered from a recording.

Each handler first runs once against moto while the parsed responses are recorded per
operation; then botocore's `before-call` hook answers every call from that recording,
so no HTTP, no moto: what remains is our code (and botocore's parameter handling).
"""

import copy
import json
import time

from botocore.awsrequest import AWSResponse

from benchmarks.common import ROOT, Figure, moto_account

# `aggregate_cpu` on the tree before the watermark (0f68311), same machine: see docs/performance.md
OLD_AGGREGATE_MS = 0.296


def _event(name: str, **replace) -> dict:
    text = (ROOT / "events" / name).read_text()
    for key, value in replace.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)


class Recorder:
    def __init__(self, clients):
        self.clients, self.answers, self.replaying = clients, {}, False
        for client in clients:
            client.meta.events.register("after-call", self._record)
            client.meta.events.register("before-call", self._answer)

    @staticmethod
    def _key(model, params) -> str:
        if model.name in ("GetItem", "Query"):  # `params` is the serialized request here
            body = json.loads(params["body"] or b"{}")
            return model.name + json.dumps(
                body.get("Key") or body.get("ExpressionAttributeValues"), sort_keys=True
            )
        return model.name

    def _record(self, model, parsed, context, **_):
        if not self.replaying:
            self.answers[context["bench_key"]] = copy.deepcopy(parsed)

    def _answer(self, model, params, context, **_):
        context["bench_key"] = key = self._key(model, params)
        if self.replaying and key in self.answers:
            return AWSResponse("", 200, {}, None), copy.deepcopy(self.answers[key])
        return None


def _cpu_per_call(call, iterations: int, warm: int = 20) -> float:
    for _ in range(min(warm, iterations)):
        call()
    start = time.process_time()
    for _ in range(iterations):
        call()
    return (time.process_time() - start) / iterations


def stream_records(scope: str, meter_id: str, count: int, formula: str = "sum") -> list[dict]:
    """Stream INSERT records of `count` raw events: 20 customers, each one event a second."""
    from metering.store import to_item

    base = 1_790_000_000
    records = []
    for i in range(count):
        image = {
            "t": "raw",
            "st": "ok",
            "scope": scope,
            "mid": meter_id,
            "cust": f"cus_{i % 20}",
            "ts": base + i // 20,
            "seq": f"{i + 1:020d}",
            "ident": f"agg-{i}",
            "v": str(i % 9 + 1),
            "f": formula,
        }
        records.append(
            {
                "eventName": "INSERT",
                "dynamodb": {"SequenceNumber": str(i + 1), "NewImage": to_item(image)},
            }
        )
    return records


def aggregate_cpu(records: list[dict], iterations: int = 5) -> float:
    """CPU seconds per stream record of `aggregate.handle_batch`, every DynamoDB call answered
    at once (reads find nothing, writes succeed): the function's own work per record."""
    from metering import aggregate, aws

    def answer(model, **_):
        parsed = {"BatchGetItem": {"Responses": {}, "UnprocessedKeys": {}}, "Query": {"Items": []}}
        return AWSResponse("", 200, {}, None), parsed.get(model.name, {})

    client = aws.dynamodb()
    client.meta.events.register("before-call.dynamodb", answer)
    try:
        return _cpu_per_call(lambda: aggregate.handle_batch(records), iterations) / len(records)
    finally:
        client.meta.events.unregister("before-call.dynamodb", answer)


def run() -> list:
    with moto_account():
        from metering import aws, meters, sessions
        from metering.accounts import Principal, create_key
        from metering_local.lambda_runtime import LambdaContext, load_handler
        from metering_local.template import Template

        functions = Template.load(ROOT / "template.yaml").functions()
        create_key(account_id="acct_sample", secret="sk_test_sample")
        who = Principal("acct_sample", False)
        meter = meters.create(
            who,
            {
                "display_name": "AI tokens",
                "event_name": "ai_tokens",
                "default_aggregation": {"formula": "sum"},
                "value_settings": {"event_payload_key": "tokens"},
            },
        )
        token = sessions.create(who)["authentication_token"]
        v1 = _event("create_meter_event.json")
        for headers in (v1["headers"], v1["multiValueHeaders"]):
            headers.pop("Idempotency-Key", None)
        stream = _event("meter_event_stream.json", session_token=token)
        payload = {"stripe_customer_id": "cus_NciAYcXfLnqBoz", "tokens": "7.5"}
        batch = [{"event_name": "ai_tokens", "payload": payload, "identifier": f"s-{i}"} for i in range(100)]
        stream["body"] = json.dumps({"events": batch})
        summary = json.loads(
            json.dumps(_event("list_event_summaries.json")).replace("mtr_sample", meter["id"])
        )
        handlers = {
            name: load_handler(functions[name], 9000) for name in ("IngestFunction", "SummariesFunction")
        }

        def invoke(name, event):
            out = handlers[name](copy.deepcopy(event), LambdaContext(name, 30))
            assert out["statusCode"] == 200, out
            return out

        from metering import event_store

        # the stream's batched inserts go through their own client (event_store._writer)
        recorder = Recorder([aws.dynamodb(), aws.events(), event_store._writer()])
        for name, event in (
            ("IngestFunction", v1),
            ("IngestFunction", stream),
            ("SummariesFunction", summary),
        ):
            invoke(name, event)
        recorder.replaying = True
        v1_cpu = _cpu_per_call(lambda: invoke("IngestFunction", v1), 500)
        stream_cpu = _cpu_per_call(lambda: invoke("IngestFunction", stream), 40) / 100
        summary_cpu = _cpu_per_call(lambda: invoke("SummariesFunction", summary), 500)
        recorder.replaying = False
        for client in recorder.clients:
            client.meta.events.unregister("after-call", recorder._record)
            client.meta.events.unregister("before-call", recorder._answer)
        aggregate_cpu_sum = aggregate_cpu(stream_records(who.scope, meter["id"], 1000))
    return [
        Figure("handler CPU", "v1 meter event request", v1_cpu * 1000, "ms", "<= 2 ms", v1_cpu <= 0.002),
        Figure(
            "handler CPU",
            "v2 stream, batch of 100",
            stream_cpu * 1000,
            "ms/event",
            "<= 0.2 ms",
            stream_cpu <= 0.0002,
        ),
        Figure("handler CPU", "summary query (24 hourly windows)", summary_cpu * 1000, "ms"),
        Figure(
            "handler CPU",
            "aggregate, batch of 1,000 records (sum meter, 20 customers)",
            aggregate_cpu_sum * 1000,
            "ms/record",
            f"<= half of {OLD_AGGREGATE_MS} ms",
            aggregate_cpu_sum * 1000 <= OLD_AGGREGATE_MS / 2,
        ),
    ]
