"""DynamoDB stream event sources, driven like Lambda's event source mapping.

Per shard, records are read in order and handed to the function in batches of at most
`BatchSize`, shaped as Lambda delivers them (epoch `ApproximateCreationDateTime`,
`eventSourceARN`). With `ReportBatchItemFailures`, processing resumes from the lowest
failed record; when the function raises, the whole batch is retried, bisected first
when `BisectBatchOnFunctionError` is set. After `MaximumRetryAttempts` the batch goes to
the on-failure destination (here: logged) and the shard moves on, as in AWS.
"""

import datetime
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3

log = logging.getLogger("metering_local.stream")


@dataclass
class Mapping:
    """The event source mapping settings the template declares for one stream trigger."""

    batch_size: int = 100
    report_failures: bool = False
    bisect: bool = False
    max_retries: int = -1

    @classmethod
    def from_properties(cls, props: dict) -> "Mapping":
        return cls(
            int(props.get("BatchSize", 100)),
            "ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
            bool(props.get("BisectBatchOnFunctionError", False)),
            int(props.get("MaximumRetryAttempts", -1)),
        )


def lambda_record(record: dict, stream_arn: str) -> dict:
    """A DynamoDB Streams API record as Lambda puts it in the event."""
    out = dict(record, eventSourceARN=stream_arn)
    data = dict(record["dynamodb"])
    created = data.get("ApproximateCreationDateTime")
    if isinstance(created, datetime.datetime):
        data["ApproximateCreationDateTime"] = int(created.timestamp())
    out["dynamodb"] = data
    return out


@dataclass
class ShardConsumer:
    """Delivers one shard's records to `invoke` with Lambda's batch and retry semantics."""

    invoke: Callable[[dict], dict | None]
    mapping: Mapping
    stream_arn: str = ""
    shard_id: str = "shardId-local"
    pending: list[dict] = field(default_factory=list)
    retries: int = 0
    batch_limit: int = 0
    dropped: list[list[dict]] = field(default_factory=list)

    def step(self) -> bool:
        """Deliver one batch from `pending`; False when there is nothing to deliver."""
        if not self.pending:
            return False
        size = min(self.batch_limit or self.mapping.batch_size, self.mapping.batch_size)
        batch = self.pending[:size]
        # As with a tumbling window on the mapping (the template sets one): the shard's id and
        # the window's state come with the records.
        event = {
            "Records": [lambda_record(r, self.stream_arn) for r in batch],
            "shardId": self.shard_id,
            "eventSourceARN": self.stream_arn,
            "state": {},
        }
        try:
            result = self.invoke(event)
        except Exception:
            log.exception("stream batch of %d records failed", len(batch))
            if self.mapping.bisect and len(batch) > 1:
                self.batch_limit = max(1, len(batch) // 2)
            self._retry_or_drop(batch)
            return True
        failed = self._first_failure(batch, result)
        if failed is None:
            del self.pending[: len(batch)]
            self.retries, self.batch_limit = 0, 0
            return True
        del self.pending[:failed]
        self._retry_or_drop(batch[failed:])
        return True

    def _first_failure(self, batch: list[dict], result) -> int | None:
        if not self.mapping.report_failures or not isinstance(result, dict):
            return None
        ids = {f.get("itemIdentifier") for f in result.get("batchItemFailures") or []}
        if not ids:
            return None
        positions = [i for i, r in enumerate(batch) if r["dynamodb"]["SequenceNumber"] in ids]
        return min(positions) if positions else 0  # an unknown identifier fails the whole batch

    def _retry_or_drop(self, failed: list[dict]) -> None:
        self.retries += 1
        if self.mapping.max_retries >= 0 and self.retries > self.mapping.max_retries:
            log.error("stream records dropped to the on-failure destination: %d", len(failed))
            self.dropped.append(failed)
            del self.pending[: len(failed)]
            self.retries, self.batch_limit = 0, 0

    def drain(self) -> None:
        while self.step():
            pass


class StreamPoller(threading.Thread):
    """Polls one table's stream and feeds a function, until `stop` is set."""

    def __init__(self, table: str, invoke, mapping: Mapping, stop: threading.Event, interval: float = 0.2):
        super().__init__(daemon=True, name=f"stream-{table}")
        self.table, self.stop, self.interval = table, stop, interval
        self.consumer = ShardConsumer(invoke, mapping)
        self.streams = boto3.client("dynamodbstreams")
        self.positions: dict[str, str | None] = {}
        self._last: str | None = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.settle()
            except Exception:
                log.exception("stream poll failed")
            self.stop.wait(self.interval)

    def settle(self) -> None:
        """Deliver every record written so far (used by the thread and by tests)."""
        if not self.consumer.stream_arn:
            table = boto3.client("dynamodb").describe_table(TableName=self.table)["Table"]
            self.consumer.stream_arn = table["LatestStreamArn"]
        self.poll(self.consumer.stream_arn)

    def poll(self, arn: str) -> None:
        for shard in self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
            shard_id = shard["ShardId"]
            self.consumer.pending = self._read(arn, shard_id)
            self.consumer.shard_id = shard_id
            while self.consumer.pending and not self.stop.is_set():
                before = self.consumer.pending[0]["dynamodb"]["SequenceNumber"]
                self.consumer.step()
                if self.consumer.pending and self.consumer.pending[0]["dynamodb"]["SequenceNumber"] == before:
                    time.sleep(min(1.0, 0.05 * 2**self.consumer.retries))  # back off before a retry
            if not self.consumer.pending:
                self.positions[shard_id] = self._last or self.positions.get(shard_id)

    def _read(self, arn: str, shard_id: str) -> list[dict]:
        """All records after the shard's checkpoint (a fresh iterator each poll)."""
        after = self.positions.get(shard_id)
        kwargs = {"StreamArn": arn, "ShardId": shard_id}
        if after is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=after)
        iterator = self.streams.get_shard_iterator(**kwargs)["ShardIterator"]
        records: list[dict] = []
        while iterator:
            out = self.streams.get_records(ShardIterator=iterator, Limit=1000)
            records.extend(out.get("Records", []))
            if not out.get("Records"):
                break
            iterator = out.get("NextShardIterator")
        self._last = records[-1]["dynamodb"]["SequenceNumber"] if records else None
        return records


def start(template, runtime, names, stop: threading.Event) -> list[threading.Thread]:
    """One poller per DynamoDB stream trigger in the template."""
    threads = []
    for logical_id, props in template.triggers("DynamoDB"):
        stream = props["Stream"]
        table_ref = (
            stream.get("Fn::GetAtt", [""])[0] if isinstance(stream, dict) else str(stream).split(".")[0]
        )
        table = names.tables[table_ref]

        def invoke(event, _fn=logical_id):
            return runtime.invoke(_fn, event)

        poller = StreamPoller(table, invoke, Mapping.from_properties(props), stop)
        poller.start()
        threads.append(poller)
    return threads
