"""Bulk upload failure paths against moto: crashes, dead invocations, replaced or deleted objects.

Totals are checked against the stored events themselves (events table items with st == "ok"),
not against the result file alone.
"""

import json
import uuid
from decimal import Decimal

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from metering import bulk, event_store, meters, notifications, store
from metering.accounts import Principal, create_key
from metering.config import settings
from tests.integration.test_bulk import BUCKET, START, csv_body, event_types, put, result, run


@pytest.fixture(autouse=True)
def local_continuations(monkeypatch):
    monkeypatch.setenv("METERING_LOCAL", "1")


@pytest.fixture
def who(aws):
    _, account_id = create_key(secret="sk_test_bulk_recovery")
    return Principal(account_id, False)


@pytest.fixture
def meter(who):
    body = {"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    return meters.create(who, body | {"value_settings": {"event_payload_key": "tokens"}})


def stored(who) -> tuple[int, Decimal]:
    """(count, sum) of the account's counted raw events, straight from the events table."""
    decode = TypeDeserializer().deserialize
    count, total = 0, Decimal(0)
    for page in boto3.client("dynamodb").get_paginator("scan").paginate(TableName=settings().events_table):
        for raw in page["Items"]:
            item = {k: decode(v) for k, v in raw.items()}
            if item.get("scope") == who.scope and item.get("st") == "ok" and item.get("t") == "raw":
                count, total = count + 1, total + Decimal(item["v"])
    return count, total


def jsonl(rows: list[dict]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def row(i: int, identifier=None, tokens="1") -> dict:
    out = {
        "event_name": "tokens",
        "timestamp": START + i,
        "payload": {"stripe_customer_id": "c", "tokens": tokens},
    }
    return out | ({"identifier": identifier} if identifier is not ... else {})


def crash_after(monkeypatch, calls: int) -> None:
    """The invocation dies right after its `calls`-th batch was written."""
    real, seen = event_store.record_many, []

    def crashing(events, **kw):
        out = real(events, **kw)
        seen.append(1)
        if len(seen) == calls:
            raise RuntimeError("injected crash after writing")
        return out

    monkeypatch.setattr(event_store, "record_many", crashing)


def progress_item(who, name: str) -> dict | None:
    etag = boto3.client("s3").head_object(Bucket=BUCKET, Key=f"uploads/{who.account_id}/{name}")["ETag"]
    upload = bulk.parse_upload(BUCKET, f"uploads/{who.account_id}/{name}", etag)
    return store.get(settings().main_table, upload.progress_key["pk"], upload.progress_key["sk"])


@pytest.mark.parametrize("identifier", [None, "", ...], ids=["null", "empty", "absent"])
def test_rows_without_identifier_survive_a_crash_and_resume_exactly(aws, who, meter, monkeypatch, identifier):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 30)
    event = put(who, "anon.jsonl", jsonl([row(i, identifier) for i in range(100)]))
    crash_after(monkeypatch, 5)  # rows 41..50 written after the checkpoint at row 30... then the crash
    with pytest.raises(RuntimeError):
        run(event)
    run(event)  # S3's retry
    out = result(who, "anon.jsonl")
    assert (out["records"], out["ingested"], out["errors"]) == (100, 100, 0)
    assert stored(who) == (100, 100)


def test_rows_before_a_broken_spot_are_counted_and_reported(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 4)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 8)
    good = json.dumps([row(i, f"p{i}", "x" if i == 9 else "2") for i in range(11)])
    run(put(who, "cut.json", good[:-1].encode() + b', {"event_name": '))  # the file breaks after row 11
    out = result(who, "cut.json")
    assert out["status"] == "failed" and "element 12" in out["failed_reason"]
    assert (out["records"], out["ingested"], out["errors"]) == (11, 10, 1)
    assert stored(who) == (10, 20)
    assert "data_management.import_set.failed" in event_types(who)


@pytest.mark.parametrize("step", ["_merge_parts", "publish"])
def test_a_crash_while_finishing_counts_nothing_twice_and_still_announces(aws, who, meter, monkeypatch, step):
    body = csv_body([[f"f{i}", START + i, "tokens", "c", "1"] for i in range(5)]) + b"\r\n\r\n"
    body += csv_body([["f9", START, "tokens", "c", "1"]])  # blank lines, then a header again: a bad row
    event = put(who, "blank.csv", body)
    owner = bulk if step == "_merge_parts" else notifications
    real, calls = getattr(owner, step), []

    def fail_once(*args):
        if step == "_merge_parts" or args[2].startswith("data_management.import_set"):
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("injected crash while finishing")
        return real(*args)

    monkeypatch.setattr(owner, step, fail_once)
    with pytest.raises(RuntimeError):
        run(event)
    run(event)
    out = result(who, "blank.csv")
    assert (out["records"], out["ingested"], out["errors"]) == (7, 6, 1)
    assert stored(who) == (6, 6)
    assert "data_management.import_set.succeeded" in event_types(who)


def test_a_dead_invocation_is_taken_over_once_its_lease_runs_out(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 10)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 20)
    monkeypatch.setattr(bulk, "_release", lambda *a: None)  # killed by a timeout: nothing runs after
    event = put(who, "dead.csv", csv_body([["", START + i, "tokens", "c", "1"] for i in range(60)]))
    crash_after(monkeypatch, 3)
    with pytest.raises(RuntimeError):
        run(event)
    run(event)  # a redelivery while the lease still runs: the holder may be alive, so nothing happens
    assert progress_item(who, "dead.csv")["status"] == "running"
    later = bulk.time.time() + bulk.LEASE_SECONDS + 1
    monkeypatch.setattr(bulk.time, "time", lambda: later)
    run(event)  # S3's next retry
    out = result(who, "dead.csv")
    assert (out["records"], out["ingested"], out["errors"]) == (60, 60, 0)
    assert progress_item(who, "dead.csv")["status"] == "done"
    assert stored(who) == (60, 60)


def test_a_duplicate_notification_waits_while_a_continuation_carries_on(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "BATCH_ROWS", 5)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 10)
    event = put(who, "long.csv", csv_body([[f"l{i}", START + i, "tokens", "c", "1"] for i in range(30)]))
    (follow_up,) = bulk.handle(event, lambda: 0)["continuations"]
    assert bulk.handle(event, lambda: 900_000) == {"continuations": []}  # S3 delivered it twice
    assert progress_item(who, "long.csv")["row"] == 10
    run(follow_up, remaining_ms=lambda: 900_000)
    assert result(who, "long.csv")["ingested"] == 30
    assert stored(who) == (30, 30)


def test_an_object_replaced_before_it_was_read_is_left_to_its_own_notification(aws, who, meter):
    old = put(who, "same.csv", csv_body([["o1", START, "tokens", "c", "5"]]))
    new = put(
        who, "same.csv", csv_body([["n1", START, "tokens", "c", "7"], ["n2", START, "tokens", "c", "1"]])
    )
    run(new)
    run(old)  # the first object's notification arrives late
    out = result(who, "same.csv")
    assert (out["status"], out["ingested"]) == ("succeeded", 2)
    assert stored(who) == (2, 8)
    failed = [e for e in notifications.list_events(who.scope, 100, None)[0] if e["type"].endswith("failed")]
    assert "replaced" in failed[0]["data"]["failed_reason"]


def test_an_object_deleted_before_it_was_read_fails(aws, who, meter):
    event = put(who, "gone.csv", csv_body([["g1", START, "tokens", "c", "5"]]))
    boto3.client("s3").delete_object(Bucket=BUCKET, Key=f"uploads/{who.account_id}/gone.csv")
    run(event)
    out = result(who, "gone.csv")
    assert out["status"] == "failed" and "deleted" in out["failed_reason"]


@pytest.mark.parametrize("suffix", ["", "2026-11-24/"])
def test_folder_markers_are_ignored(aws, who, meter, suffix):
    key = f"uploads/{who.account_id}/{suffix}"
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"")
    assert bulk.handle({"Records": [{"s3": {"bucket": {"name": BUCKET}, "object": {"key": key}}}]}, int) == {
        "continuations": []
    }
    assert boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="results/")["KeyCount"] == 0


# Issue 16 class 8, property-based: whatever rows a file holds, however often the function
# crashes mid-file, wherever the file is cut, and however often the same rows are uploaded
# again under other names, every row counts at most once, and every result file reports
# exactly the rows that counted from it.

IDENTIFIERS = st.one_of(st.none(), st.just(""), st.just(...), st.sampled_from([f"k{i}" for i in range(8)]))
ROW = st.tuples(IDENTIFIERS, st.sampled_from(["1", "2.5", "-1", "x"]))


@examples(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(ROW, min_size=1, max_size=25),
    crashes=st.lists(st.integers(1, 4), max_size=3),
    cut=st.one_of(st.none(), st.integers(1, 25)),
    uploads=st.integers(1, 3),
)
def test_bulk_never_counts_a_row_twice(aws, monkeypatch, rows, crashes, cut, uploads):
    who = Principal(f"acct_{uuid.uuid4().hex[:12]}", False)
    create_key(account_id=who.account_id, secret=f"sk_test_{who.account_id}")
    meters.create(
        who,
        {
            "display_name": "T",
            "event_name": "tokens",
            "default_aggregation": {"formula": "sum"},
            "value_settings": {"event_payload_key": "tokens"},
        },
    )
    monkeypatch.setattr(bulk, "BATCH_ROWS", 3)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 6)
    body = [row(i, ident, tokens) for i, (ident, tokens) in enumerate(rows)]
    text = json.dumps(body)
    if cut is not None and cut < len(body):  # the file breaks after row `cut`
        text = json.dumps(body[:cut])[:-1] + ', {"event_name": '
    real = event_store.record_many
    reported = 0
    for n in range(uploads):
        name = f"u{n}.json"
        event = put(who, name, text.encode())
        plan = iter(crashes if n == 0 else [])
        calls = {"n": 0, "at": next(plan, None)}

        def crashing(events, calls=calls, plan=plan, **kw):
            out = real(events, **kw)
            calls["n"] += 1
            if calls["at"] is not None and calls["n"] == calls["at"]:
                calls["n"], calls["at"] = 0, next(plan, None)
                raise RuntimeError("injected crash after writing")
            return out

        monkeypatch.setattr(event_store, "record_many", crashing)
        for _ in range(len(crashes) + 1):  # S3 retries the notification after each crash
            try:
                run(event)
                break
            except RuntimeError:
                continue
        monkeypatch.setattr(event_store, "record_many", real)
        reported += result(who, name)["ingested"]
    count, _ = stored(who)
    assert count == reported  # each result file reports exactly what counted from it
    valid = [(i, ident) for i, (ident, tokens) in enumerate(rows[:cut] if cut else rows) if tokens != "x"]
    named = {ident for _, ident in valid if ident not in (None, "", ...)}
    anonymous = [i for i, ident in valid if ident in (None, "", ...)]
    assert count == len(named) + len(anonymous)  # re-uploads count nothing again
