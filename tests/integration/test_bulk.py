"""Bulk upload through S3 against moto: formats, bad rows and files, redelivery, resume."""

import csv
import gzip
import io
import json
import time

import boto3
import pytest

from metering import bulk, event_store, meters, notifications, summaries
from metering.accounts import Principal, create_key
from tests.conftest import sample_event
from tests.streams import stream_pump

BUCKET = "metering-uploads"
NOW = int(time.time())
START = NOW - NOW % 86400 - 5 * 86400


@pytest.fixture(autouse=True)
def local_continuations(monkeypatch):
    """Continuations come back in the result (the local runner's way); see the last test for AWS's."""
    monkeypatch.setenv("METERING_LOCAL", "1")


@pytest.fixture
def who(aws):
    _, account_id = create_key(secret="sk_test_bulk")
    return Principal(account_id, False)


@pytest.fixture
def meter(who):
    return meters.create(
        who,
        {
            "display_name": "Tokens",
            "event_name": "tokens",
            "default_aggregation": {"formula": "sum"},
            "value_settings": {"event_payload_key": "tokens"},
        },
    )


def put(who, name: str, body: bytes) -> dict:
    s3 = boto3.client("s3")
    key = f"uploads/{who.account_id}/{name}"
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
    return {
        "Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "eTag": etag.strip('"')}}}]
    }


def run(event, remaining_ms=lambda: 900_000):
    """Invoke like Lambda, following continuations as the deployed function does."""
    pending = [event]
    while pending:
        pending.extend(bulk.handle(pending.pop(0), remaining_ms)["continuations"])


def result(who, name: str) -> dict:
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"results/{who.account_id}/{name}.result.json")[
        "Body"
    ]
    return json.loads(body.read())


def errors(who, name: str) -> list[list[str]]:
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key=f"results/{who.account_id}/{name}.errors.csv")[
        "Body"
    ]
    return list(csv.reader(io.StringIO(body.read().decode())))


def usage(aws, who, meter, customer="cus_1"):
    stream_pump(aws).settle()
    params = {"customer": customer, "start_time": str(START), "end_time": str(START + 10 * 86400)}
    return summaries.list_summaries(who, meter["id"], params)["data"][0]["aggregated_value"]


def event_types(who) -> list[str]:
    return [e["type"] for e in notifications.list_events(who.scope, 100, None)[0]]


def csv_body(
    rows: list[list],
    header=("identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_tokens"),
) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode()


def test_csv_good_and_bad_rows(aws, who, meter):
    body = csv_body(
        [
            ["r1", START + 10, "tokens", "cus_1", "5"],
            ["r2", START + 20, "tokens", "cus_1", "abc"],
            ["r3", START + 30, "nothing", "cus_1", "1"],
            ["", START + 40, "tokens", "cus_1", "2.5"],
            ["r5", START - 40 * 86400, "tokens", "cus_1", "1"],
        ]
    )
    run(put(who, "day1.csv", body))
    assert result(who, "day1.csv") == {
        "file": f"uploads/{who.account_id}/day1.csv",
        "status": "succeeded_with_errors",
        "records": 5,
        "ingested": 2,
        "errors": 3,
        "failed_reason": None,
        "errors_file": f"results/{who.account_id}/day1.csv.errors.csv",
    }
    rows = errors(who, "day1.csv")
    assert rows[0] == ["row", "identifier", "code", "message"]
    assert [(r[0], r[1], r[2]) for r in rows[1:]] == [
        ("2", "r2", "meter_event_invalid_value"),
        ("3", "r3", "no_meter"),
        ("5", "r5", "timestamp_too_far_in_past"),
    ]
    assert usage(aws, who, meter) == 7.5
    types = event_types(who)
    assert "data_management.import_set.succeeded" in types
    assert "v1.billing.meter.error_report_triggered" in types and "v1.billing.meter.no_meter_found" in types


def test_json_array_with_numbers_and_strings(aws, who, meter):
    rows = [
        {
            "event_name": "tokens",
            "timestamp": START + 1,
            "payload": {"stripe_customer_id": "cus_1", "tokens": 1.25},
        },
        {
            "event_name": "tokens",
            "timestamp": str(START + 2),
            "payload": {"stripe_customer_id": "cus_1", "tokens": "3"},
        },
        "not an object",
    ]
    run(put(who, "batch.json", json.dumps(rows, indent=1).encode()))
    out = result(who, "batch.json")
    assert (out["status"], out["records"], out["ingested"], out["errors"]) == (
        "succeeded_with_errors",
        3,
        2,
        1,
    )
    assert usage(aws, who, meter) == 4.25


def test_gzip_json_lines(aws, who, meter):
    lines = [
        json.dumps(
            {
                "identifier": f"g{i}",
                "event_name": "tokens",
                "timestamp": START + i,
                "payload": {"stripe_customer_id": "cus_1", "tokens": "2"},
            }
        )
        for i in range(1200)
    ]
    run(put(who, "big.jsonl.gz", gzip.compress("\n".join(lines).encode())))
    assert result(who, "big.jsonl.gz")["ingested"] == 1200
    assert usage(aws, who, meter) == 2400


@pytest.mark.parametrize(
    "name, body, reason",
    [
        ("nocol.csv", b"identifier,event_name,payload_tokens\nx,tokens,1\n", "timestamp"),
        ("nopayload.csv", b"identifier,timestamp,event_name\nx,1,tokens\n", "payload_<key>"),
        ("empty.csv", b"", "empty"),
        ("usage.txt", b"hello", "extension"),
        ("broken.json", b'[{"event_name": "tokens"', "Invalid JSON"),
        ("bad.csv.gz", b"not gzip at all", "could not be read"),
    ],
)
def test_unreadable_files_fail_with_a_reason(aws, who, meter, name, body, reason):
    run(put(who, name, body))
    out = result(who, name)
    assert out["status"] == "failed" and reason in out["failed_reason"] and out["ingested"] == 0
    assert "data_management.import_set.failed" in event_types(who)


def test_unknown_account_prefix_fails_the_file(aws, who, meter):
    s3 = boto3.client("s3")
    s3.put_object(
        Bucket=BUCKET, Key="uploads/acct_nobody/x.csv", Body=csv_body([["a", START, "tokens", "c", "1"]])
    )
    etag = s3.head_object(Bucket=BUCKET, Key="uploads/acct_nobody/x.csv")["ETag"]
    run(
        {
            "Records": [
                {
                    "s3": {
                        "bucket": {"name": BUCKET},
                        "object": {"key": "uploads/acct_nobody/x.csv", "eTag": etag},
                    }
                }
            ]
        }
    )
    out = json.loads(s3.get_object(Bucket=BUCKET, Key="results/acct_nobody/x.csv.result.json")["Body"].read())
    assert out["status"] == "failed" and "Unknown account" in out["failed_reason"]


def test_the_same_object_delivered_twice_counts_once(aws, who, meter):
    event = put(who, "twice.csv", csv_body([["", START + i, "tokens", "cus_1", "1"] for i in range(30)]))
    run(event)
    run(event)
    assert result(who, "twice.csv")["ingested"] == 30
    assert usage(aws, who, meter) == 30


def test_the_same_rows_uploaded_under_another_name_count_once(aws, who, meter):
    named = csv_body([[f"n{i}", START + i, "tokens", "cus_1", "1"] for i in range(10)])
    anonymous = csv_body([["", START + i, "tokens", "cus_1", "1"] for i in range(10)])
    for name, body in [
        ("a.csv", named),
        ("a-again.csv", named),
        ("b.csv", anonymous),
        ("b-again.csv", anonymous),
    ]:
        run(put(who, name, body))
    assert usage(aws, who, meter) == 20
    again = result(who, "a-again.csv")
    assert (again["ingested"], again["errors"]) == (0, 10)
    assert {r[2] for r in errors(who, "a-again.csv")[1:]} == {"duplicate_identifier"}
    assert result(who, "b-again.csv")["ingested"] == 0


def test_a_file_resumes_in_new_invocations_when_time_runs_low(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 7)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 20)
    rows = [[f"t{i}", START + i, "tokens", "cus_1", "x" if i % 9 == 0 else "1"] for i in range(100)]
    event = put(who, "slow.csv", csv_body(rows))
    invocations = []

    def remaining_ms():
        return 1_000  # always low: each invocation does one segment and hands over

    pending = [event]
    while pending:
        invocations.append(1)
        pending.extend(bulk.handle(pending.pop(0), remaining_ms)["continuations"])
    assert len(invocations) > 3
    out = result(who, "slow.csv")
    assert (out["records"], out["ingested"], out["errors"]) == (100, 88, 12)
    assert [int(r[0]) for r in errors(who, "slow.csv")[1:]] == [i + 1 for i in range(100) if i % 9 == 0]
    assert usage(aws, who, meter) == 88


def test_a_crash_midway_resumes_without_loss_or_double_counting(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 30)
    rows = [["", START + i, "tokens", "cus_1", "bad" if i == 45 else "1"] for i in range(100)]
    event = put(who, "crash.csv", csv_body(rows))
    real, calls = event_store.record_many, []

    def crashing(events, **kw):
        calls.append(1)
        out = real(events, **kw)  # the rows are written, then the invocation dies
        if len(calls) == 5:
            raise RuntimeError("injected crash after writing")
        return out

    monkeypatch.setattr(event_store, "record_many", crashing)
    with pytest.raises(RuntimeError):
        run(event)
    run(event)  # S3 retries the notification
    out = result(who, "crash.csv")
    assert (out["records"], out["ingested"], out["errors"]) == (100, 99, 1)
    assert [r[0] for r in errors(who, "crash.csv")[1:]] == ["46"]
    assert usage(aws, who, meter) == 99


def test_sample_event_through_the_handler(aws, handler):
    create_key(account_id="acct_sample", secret="sk_test_sample")
    meters.create(
        Principal("acct_sample", False),
        {"display_name": "t", "event_name": "tokens", "default_aggregation": {"formula": "sum"}},
    )
    body = csv_body(
        [["s1", START, "tokens", "cus_1", "1"]],
        ("identifier", "timestamp", "event_name", "payload_stripe_customer_id", "payload_value"),
    )
    event = sample_event("s3_upload.json")
    s3 = boto3.client("s3")
    event["Records"][0]["s3"]["object"]["eTag"] = s3.put_object(
        Bucket=BUCKET, Key="uploads/acct_sample/usage.csv", Body=body
    )["ETag"].strip('"')
    assert handler("BulkUploadFunction", event) == {"continuations": []}
    out = json.loads(
        s3.get_object(Bucket=BUCKET, Key="results/acct_sample/usage.csv.result.json")["Body"].read()
    )
    assert out["status"] == "succeeded" and out["ingested"] == 1


def test_in_aws_a_continuation_invokes_the_function_again(aws, who, meter, monkeypatch):
    monkeypatch.delenv("METERING_LOCAL")
    monkeypatch.setattr(bulk, "BATCH_ROWS", 5)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 5)
    sent = []

    class Lambda:
        def invoke(self, **kwargs):
            sent.append(kwargs)

    monkeypatch.setattr(bulk.aws, "lambda_", Lambda)
    monkeypatch.setattr(Lambda, "cache_clear", staticmethod(lambda: None), raising=False)
    event = put(who, "aws.csv", csv_body([[f"w{i}", START + i, "tokens", "cus_1", "1"] for i in range(12)]))
    arn = "arn:aws:lambda:us-east-1:123456789012:function:stack-bulk-upload"
    assert bulk.handle(event, lambda: 1_000, arn) == {}
    (call,) = sent
    assert call["FunctionName"] == arn and call["InvocationType"] == "Event"
    follow_up = json.loads(call["Payload"])
    assert follow_up["continuation"]["key"] == f"uploads/{who.account_id}/aws.csv"
    monkeypatch.setenv("METERING_LOCAL", "1")
    run(follow_up)
    assert result(who, "aws.csv")["ingested"] == 12
