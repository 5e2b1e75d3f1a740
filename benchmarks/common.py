"""Shared bench plumbing: a moto account provisioned from template.yaml, call counters, rows."""

import contextlib
import os
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOUR, DAY = 3600, 86400
# Before any metering module is imported: Powertools reads these when it is created.
os.environ.update(
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
    POWERTOOLS_METRICS_NAMESPACE="Bench",
)


@dataclass
class Figure:
    section: str
    name: str
    value: float | str
    unit: str
    target: str = ""
    met: bool | None = None

    def row(self) -> list[str]:
        value = (
            f"{self.value:,.3f}".rstrip("0").rstrip(".") if isinstance(self.value, float) else str(self.value)
        )
        met = "" if self.met is None else ("yes" if self.met else "NO")
        return [self.section, self.name, value, self.unit, self.target, met]


def median(values) -> float:
    return statistics.median(values)


# The handlers' environment in every bench (moto credentials, quiet Powertools).
BENCH_ENV = dict(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="true",
    POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_LOG_LEVEL="ERROR",
    POWERTOOLS_METRICS_NAMESPACE="Bench",
    METERING_LOCAL="1",
)


def provision():
    """The template's tables, bucket and bus on the current endpoint; env set as for the handlers."""
    from metering import aws, config
    from metering_local import aws_endpoint
    from metering_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    names = aws_endpoint.provision(template, "metering-uploads")
    os.environ.update(aws_endpoint.function_environment(template, names))
    os.environ["UPLOAD_BUCKET"] = "metering-uploads"
    config.settings.cache_clear()
    aws.reset()
    return names


@contextlib.contextmanager
def moto_account():
    """In-process moto with the template's tables, bucket and bus; env set as for the handlers."""
    os.environ.update(BENCH_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    from moto import mock_aws

    from metering import aws, config
    from metering_local import moto_atomic

    moto_atomic.install()
    with mock_aws():
        yield provision()
        config.settings.cache_clear()
        aws.reset()


class Calls:
    """Counts DynamoDB requests, written items by table prefix, and items read, on our client."""

    WRITES = {"PutItem", "UpdateItem", "DeleteItem"}

    def __init__(self):
        from metering import aws

        self.client = aws.dynamodb()
        self.requests: Counter = Counter()
        self.items: Counter = Counter()
        self.wcu = 0
        self.read = 0
        self.client.meta.events.register("before-parameter-build.dynamodb", self._before)
        self.client.meta.events.register("after-call.dynamodb", self._after)

    def close(self):
        self.client.meta.events.unregister("before-parameter-build.dynamodb", self._before)
        self.client.meta.events.unregister("after-call.dynamodb", self._after)

    def _before(self, model, params, **_):
        op = model.name
        self.requests[op] += 1
        if op in self.WRITES:
            self.wcu += 1
            self.items[self._prefix(params.get("Item") or params.get("Key"))] += 1
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                ((kind, body),) = entry.items()
                if kind != "ConditionCheck":
                    self.wcu += 2
                    self.items[self._prefix(body.get("Item") or body.get("Key"))] += 1

    def _after(self, parsed, **_):
        self.read += len(parsed.get("Items", [])) + sum(len(v) for v in parsed.get("Responses", {}).values())
        if "Item" in parsed:
            self.read += 1

    @staticmethod
    def _prefix(item) -> str:
        return (item or {}).get("pk", {}).get("S", "?").split("#", 1)[0]

    @property
    def write_requests(self) -> int:
        return sum(
            n
            for op, n in self.requests.items()
            if op in self.WRITES or op.startswith(("Transact", "Batch")) and "Write" in op
        )
