"""Issue 18: faults injected into DynamoDB, S3 and EventBridge are retried or reported, and
nothing is lost or counted twice; a bulk file whose invocation died is resumed by the
scheduled sweep; bulk result files hold up against hostile rows.

Faults are injected by wrapping the layer's boto3 clients (metering.aws), so the code
under test sees the exact errors AWS would raise.
"""

import csv
import io
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from metering import aws, bulk, error_reports, event_store, meters, notifications, store
from metering.accounts import Principal, create_key
from metering.config import settings
from metering_local import schedule_trigger
from metering_local.template import Template
from tests.conftest import ROOT
from tests.integration.test_bulk import START, csv_body, errors, put, result, run
from tests.integration.test_bulk_recovery import crash_after, jsonl, progress_item, row, stored
from tests.integration.test_input_hardening import proxy


@pytest.fixture(autouse=True)
def local_continuations(monkeypatch):
    monkeypatch.setenv("METERING_LOCAL", "1")


@pytest.fixture
def who(aws):
    _, account_id = create_key(secret="sk_test_faults")
    return Principal(account_id, False)


@pytest.fixture
def meter(who):
    body = {"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    return meters.create(who, body | {"value_settings": {"event_payload_key": "tokens"}})


def client_error(code: str, operation: str, reasons: list[str] | None = None) -> ClientError:
    response = {"Error": {"Code": code, "Message": "injected"}}
    if reasons is not None:
        response["CancellationReasons"] = [{"Code": r} for r in reasons]
    return ClientError(response, operation)


class Faulty:
    """A boto3 client whose named operations fail with `error` the first `times` calls."""

    def __init__(self, real, operation: str, error, times: int = 1):
        self.real, self.operation, self.error, self.left, self.calls = real, operation, error, times, 0

    def __getattr__(self, name):
        attr = getattr(self.real, name)
        if name != self.operation:
            return attr

        def call(*args, **kwargs):
            self.calls += 1
            if self.left:
                self.left -= 1
                raise self.error() if callable(self.error) else self.error
            return attr(*args, **kwargs)

        return call


def replace_client(monkeypatch, service: str, client) -> None:
    """Make `metering.aws.<service>()` return `client` (it still answers aws.reset())."""

    def factory():
        return client

    factory.cache_clear = lambda: None
    monkeypatch.setattr(aws, service, factory)


def inject(monkeypatch, service: str, operation: str, error, times: int = 1) -> Faulty:
    faulty = Faulty(getattr(aws, service)(), operation, error, times)
    replace_client(monkeypatch, service, faulty)
    return faulty


def header(out: dict, name: str) -> str | None:
    if out.get("headers") and name in out["headers"]:
        return out["headers"][name]
    values = (out.get("multiValueHeaders") or {}).get(name)
    return values[0] if values else None


def event_items(who) -> list[dict]:
    from boto3.dynamodb.types import TypeDeserializer

    decode = TypeDeserializer().deserialize
    items = boto3.client("dynamodb").scan(TableName=settings().events_table)["Items"]
    return [{k: decode(v) for k, v in i.items()} for i in items if decode(i["scope"]) == who.scope]


# DynamoDB throttling and transaction conflicts: a retryable 429, nothing half-written, the
# retry counts once.


def test_a_throttled_event_write_is_a_retryable_429_and_its_retry_counts_once(
    handler, who, meter, monkeypatch
):
    form = "event_name=tokens&identifier=t-1&payload[stripe_customer_id]=c&payload[tokens]=3"
    event = proxy("POST", "/v1/billing/meter_events", "/v1/billing/meter_events", who, body=form)
    faulty = inject(monkeypatch, "dynamodb", "put_item", client_error("ThrottlingException", "PutItem"))
    out = handler("IngestFunction", event)
    assert out["statusCode"] == 429 and header(out, "Stripe-Should-Retry") == "true"
    assert json.loads(out["body"])["error"]["code"] == "rate_limit" and faulty.calls == 1
    assert event_items(who) == []
    assert handler("IngestFunction", event)["statusCode"] == 200
    assert [i["ident"] for i in event_items(who)] == ["t-1"]


@pytest.mark.parametrize("reason", ["TransactionConflict", "ThrottlingError"])
def test_a_meter_create_cancelled_by_a_conflict_is_retryable_and_creates_one_meter(who, monkeypatch, reason):
    error = client_error("TransactionCanceledException", "TransactWriteItems", [reason, "None"])
    inject(monkeypatch, "dynamodb", "transact_write_items", error)
    params = {"display_name": "M", "event_name": "conflicted", "default_aggregation": {"formula": "sum"}}
    with pytest.raises(Exception) as caught:
        meters.create(who, params)
    assert (caught.value.status, caught.value.code, caught.value.should_retry) == (429, "rate_limit", True)
    created = meters.create(who, params)
    listed = meters.list_meters(who, {})["data"]
    assert [m["id"] for m in listed] == [created["id"]]


def test_a_deactivation_cancelled_by_a_conflict_is_retryable_not_silently_skipped(who, meter, monkeypatch):
    error = client_error(
        "TransactionCanceledException", "TransactWriteItems", ["None", "TransactionConflict"]
    )
    inject(monkeypatch, "dynamodb", "transact_write_items", error)
    with pytest.raises(Exception) as caught:
        meters.set_status(who, meter["id"], {}, active=False)
    assert caught.value.status == 429
    assert meters.retrieve(who, meter["id"], {})["status"] == "active"
    assert meters.set_status(who, meter["id"], {}, active=False)["status"] == "inactive"


# EventBridge failures: retried; when the bus stays down the event is still readable through
# /v2/core/events, once, and the request succeeds.


def bus_events(who) -> list[dict]:
    return [
        e for e in notifications.list_events(who.scope, 100, None)[0] if e["type"] == "billing.meter.created"
    ]


def test_a_failed_put_events_call_is_retried(who, monkeypatch):
    faulty = inject(
        monkeypatch, "events", "put_events", client_error("InternalException", "PutEvents"), times=2
    )
    meters.create(who, {"display_name": "M", "event_name": "bus", "default_aggregation": {"formula": "sum"}})
    assert faulty.calls == 3 and len(bus_events(who)) == 1


def test_refused_entries_are_put_again(who, monkeypatch):
    real = aws.events()
    calls = []

    class Refusing:
        def put_events(self, Entries):  # noqa: N803 - boto3's parameter name
            calls.append(len(Entries))
            if len(calls) == 1:
                return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure"}]}
            return real.put_events(Entries=Entries)

    replace_client(monkeypatch, "events", Refusing())
    meters.create(who, {"display_name": "M", "event_name": "bus", "default_aggregation": {"formula": "sum"}})
    assert calls == [1, 1] and len(bus_events(who)) == 1


def test_a_bus_that_stays_down_fails_nothing_and_loses_no_event(who, monkeypatch, caplog):
    faulty = inject(
        monkeypatch, "events", "put_events", client_error("InternalException", "PutEvents"), times=99
    )
    created = meters.create(
        who, {"display_name": "M", "event_name": "bus", "default_aggregation": {"formula": "sum"}}
    )
    assert faulty.calls == notifications.BUS_ATTEMPTS
    assert [e["related_object"]["id"] for e in bus_events(who)] == [created["id"]]


# S3 read errors mid-file: the invocation fails, the file resumes from its checkpoint; a
# network fault never fails the file as a whole.


class FlakyBody:
    def __init__(self, body, fail_after: int | None):
        self.body, self.left = body, fail_after

    def read(self, size=-1):
        if self.left is not None:
            if self.left <= 0:
                raise ConnectionResetError(104, "Connection reset by peer (injected)")
            size = self.left if size is None or size < 0 else min(size, self.left)
            self.left -= size
        return self.body.read(size)

    def close(self):
        self.body.close()


def test_an_s3_read_error_mid_file_resumes_without_loss_or_double_counting(who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 20)
    body = jsonl([row(i, f"s{i}") for i in range(100)])
    event = put(who, "flaky.jsonl", body)
    real, reads = aws.s3(), []

    class FlakyS3:
        def __getattr__(self, name):
            return getattr(real, name)

        def get_object(self, **kwargs):
            out = real.get_object(**kwargs)
            reads.append(kwargs.get("Range"))
            fail_after = (
                len(body) // 2 if len(reads) == 1 and kwargs.get("Key", "").startswith("uploads/") else None
            )
            return {**out, "Body": FlakyBody(out["Body"], fail_after)}

    replace_client(monkeypatch, "s3", FlakyS3())
    with pytest.raises(ConnectionResetError):
        run(event)
    assert progress_item(who, "flaky.jsonl")["status"] == "running"  # not failed as a whole
    run(event)  # S3's retry
    out = result(who, "flaky.jsonl")
    assert (out["status"], out["records"], out["ingested"], out["errors"]) == ("succeeded", 100, 100, 0)
    assert stored(who) == (100, 100)


# Error reports of a segment are published exactly once, however often it runs again.


def report_events(who) -> list[dict]:
    return [
        e
        for e in notifications.list_events(who.scope, 100, None)[0]
        if e["type"].startswith("v1.billing.meter")
    ]


def test_a_segment_run_again_after_a_crash_publishes_its_error_reports_once(who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 5)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 10)
    rows = [row(i, f"r{i}", "x" if i % 5 == 0 else "1") for i in range(30)]  # 2 bad rows per segment
    event = put(who, "reports.jsonl", jsonl(rows))
    real, crashed = bulk._checkpoint, []

    def crash_once(upload, progress, status="running"):
        if status == "running" and progress.row == 20 and not crashed:
            crashed.append(1)
            raise RuntimeError("injected crash after the segment's reports, before its checkpoint")
        return real(upload, progress, status)

    monkeypatch.setattr(bulk, "_checkpoint", crash_once)
    with pytest.raises(RuntimeError):
        run(event)
    run(event)
    assert result(who, "reports.jsonl")["errors"] == 6
    reports = report_events(who)
    assert len(reports) == 3  # one per segment with errors, the re-run one included once
    assert sum(r["data"]["reason"]["error_count"] for r in reports) == 6


def test_publish_once_writes_nothing_the_second_time(who, meter):
    failures = [error_reports.Failure("tokens", "i1", "meter_event_invalid_value", "bad")]
    marker = {"pk": "ACCT#" + who.account_id, "sk": "IMPORT#etag#hash#REPORT#1"}
    first = error_reports.publish_once(who.account_id, False, failures, 0, 1, marker)
    again = error_reports.publish_once(who.account_id, False, failures, 0, 1, marker)
    assert len(first) == 1 and again == [] and len(report_events(who)) == 1


# The scheduled sweep: files whose invocation died are resumed from their last checkpoint.


def sweep_event() -> dict:
    return schedule_trigger.scheduled_event("BulkUploadFunction-Sweep")


def test_the_bulk_function_is_swept_on_a_schedule_the_local_runner_runs():
    fn = Template.load(ROOT / "template.yaml").functions()["BulkUploadFunction"]
    schedules = [e["Properties"]["Schedule"] for e in fn.events.values() if e["Type"] == "Schedule"]
    assert len(schedules) == 1 and schedule_trigger.rate_seconds(schedules[0]) == 300


def test_a_file_whose_invocation_timed_out_is_resumed_by_the_sweep(handler, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 20)
    monkeypatch.setattr(bulk, "_release", lambda *a: None)  # a hard timeout: nothing runs after
    event = put(who, "timeout.csv", csv_body([[f"t{i}", START + i, "tokens", "c", "1"] for i in range(60)]))
    real = event_store.record_many
    crash_after(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        run(event)
    monkeypatch.setattr(event_store, "record_many", real)  # S3's retries are spent; the sweep runs next
    assert bulk.handle(sweep_event(), lambda: 900_000) == {"continuations": []}  # lease still held
    later = bulk.time.time() + bulk.LEASE_SECONDS + 1
    monkeypatch.setattr(bulk.time, "time", lambda: later)
    follow_ups = bulk.handle(sweep_event(), lambda: 900_000)["continuations"]
    assert len(follow_ups) == 1
    for follow_up in follow_ups:  # what the local runner's schedule trigger does with them
        run(follow_up)
    out = result(who, "timeout.csv")
    assert (out["records"], out["ingested"], out["errors"]) == (60, 60, 0)
    assert stored(who) == (60, 60)
    index = list(store.query(settings().main_table, bulk.RUNNING_PK, "\x01", store.HIGH, True, True))
    assert index == []  # finished files leave the sweeper's index
    assert bulk.handle(sweep_event(), lambda: 900_000) == {"continuations": []}


def test_a_file_that_keeps_dying_at_one_row_fails_with_a_reason_after_the_sweeps(who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 20)
    event = put(who, "poison.csv", csv_body([[f"p{i}", START + i, "tokens", "c", "1"] for i in range(50)]))
    real = bulk._write

    def dies_after_row_20(accepted, sources, segment):
        if segment.first_row > 20:
            raise MemoryError("injected: out of memory on the same rows every time")
        return real(accepted, sources, segment)

    monkeypatch.setattr(bulk, "_write", dies_after_row_20)
    for _ in range(3):  # the first delivery and S3's two retries
        with pytest.raises(MemoryError):
            run(event)
    now = bulk.time.time()
    for sweep in range(bulk.MAX_SWEEPS + 1):
        later = now + (sweep + 1) * 600
        monkeypatch.setattr(bulk.time, "time", lambda later=later: later)
        for follow_up in bulk.handle(sweep_event(), lambda: 900_000)["continuations"]:
            with pytest.raises(MemoryError):
                run(follow_up)
    out = result(who, "poison.csv")
    assert out["status"] == "failed" and "past row 20" in out["failed_reason"]
    assert (out["records"], out["ingested"]) == (20, 20) and stored(who) == (20, 20)
    assert progress_item(who, "poison.csv")["status"] == "failed"


# Bulk result files against hostile rows: spreadsheet formulas, oversized cells, deep nesting,
# Python-only numbers.


def test_errors_files_neutralise_spreadsheet_formulas(who, meter):
    hostile = ['=HYPERLINK("http://x")', "+1+1", "-2-2", "@SUM(A1)", "\tq", "\rr", "plain"]
    rows = [[ident, START, "tokens", "c", "oops"] for ident in hostile]
    run(put(who, "formulas.csv", csv_body(rows)))
    body = errors(who, "formulas.csv")
    cells = [line[1] for line in body[1:]]
    assert cells == ["'" + h for h in hostile[:-1]] + ["plain"]
    assert all(not cell.startswith(bulk.FORMULA_STARTS) for line in body[1:] for cell in line[1:])


def test_hostile_rows_are_rejected_one_by_one_and_the_file_gets_its_result(who, meter):
    lines = [
        "identifier,timestamp,event_name,payload_stripe_customer_id,payload_tokens",
        f"ok-1,{START},tokens,c,1",
        f"big,{START},tokens,c," + "9" * 200_000,
        "u,1_000,tokens,c,1",
        "d,\u0661\u0662,tokens,c,1",
        f'nl,{START},tokens,c,"5\n"',
        f"ok-2,{START},tokens,c,2",
    ]
    run(put(who, "hostile.csv", "\n".join(lines).encode()))
    out = result(who, "hostile.csv")
    assert (out["status"], out["records"], out["ingested"], out["errors"]) == (
        "succeeded_with_errors",
        6,
        2,
        4,
    )
    codes = {line[1]: line[2] for line in errors(who, "hostile.csv")[1:]}
    assert codes["u"] == codes["d"] == "parameter_invalid_integer"
    assert codes["nl"] == "meter_event_invalid_value" and codes[""] == "invalid_row"
    too_deep = {"event_name": "tokens", "payload": {"x": json.loads("[" * 34 + "]" * 34)}}
    nested = jsonl([row(0, "n0"), too_deep, row(2, "n2")])
    deep = nested + b"\n" + b"[" * 100_000 + b"]" * 100_000 + b"\n" + json.dumps(row(4, "n4")).encode()
    run(put(who, "nested.jsonl", deep))
    out = result(who, "nested.jsonl")
    assert (out["status"], out["records"], out["ingested"], out["errors"]) == (
        "succeeded_with_errors",
        5,
        3,
        2,
    )
    reasons = [line[3] for line in errors(who, "nested.jsonl")[1:]]
    assert reasons == ["The row is nested more than 32 levels deep."] * 2


def test_errors_csv_is_plain_csv():
    body = io.StringIO()
    csv.writer(body).writerow([1, bulk.spreadsheet_safe("=1"), bulk.spreadsheet_safe("ok")])
    assert body.getvalue() == "1,'=1,ok\r\n"
