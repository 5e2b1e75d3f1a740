"""A large plain file split into slices ingested by concurrent invocations, against moto:
one result and one errors file, rows numbered as in the whole file, exact under crashes of
any slice, dead slices swept, slices run in any order."""

import gzip
import json
import random
import threading
import uuid

import boto3
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from metering import bulk, event_store, meters
from metering.accounts import Principal, create_key
from tests.integration.test_bulk import BUCKET, START, csv_body, errors, event_types, put, result
from tests.integration.test_bulk_recovery import jsonl, progress_item, row, stored


@pytest.fixture(autouse=True)
def small_slices(monkeypatch):
    monkeypatch.setenv("METERING_LOCAL", "1")
    monkeypatch.setattr(bulk, "SLICE_BYTES", 400)
    monkeypatch.setattr(bulk, "BATCH_ROWS", 4)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 8)


@pytest.fixture
def who(aws):
    _, account_id = create_key(secret="sk_test_bulk_slices")
    return Principal(account_id, False)


@pytest.fixture
def meter(who):
    body = {"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    return meters.create(who, body | {"value_settings": {"event_payload_key": "tokens"}})


def run_all(event, order=lambda pending: 0, remaining_ms=lambda: 900_000) -> int:
    """Invoke like Lambda, each follow-up (slice, continuation) in turn; returns invocations."""
    pending, invocations = [event], 0
    while pending:
        invocations += 1
        pending += bulk.handle(pending.pop(order(pending)), remaining_ms)["continuations"]
    return invocations


def rows_csv(count: int, bad=lambda i: i % 7 == 3, anonymous=lambda i: i % 2 == 0) -> bytes:
    return csv_body(
        [
            ["" if anonymous(i) else f"s{i}", START + i, "tokens", "c", "x" if bad(i) else "1"]
            for i in range(count)
        ]
    )


def test_a_large_file_is_split_and_gives_one_result_with_its_rows_numbered_as_a_whole(aws, who, meter):
    event = put(who, "big.csv", rows_csv(100))
    invocations = run_all(event)
    file = progress_item(who, "big.csv")
    assert file["slices"] >= 5 and invocations == file["slices"] + 1 and file["status"] == "done"
    out = result(who, "big.csv")
    bad = [i + 1 for i in range(100) if i % 7 == 3]
    assert (out["status"], out["records"], out["ingested"], out["errors"]) == (
        "succeeded_with_errors",
        100,
        100 - len(bad),
        len(bad),
    )
    listed = errors(who, "big.csv")[1:]
    assert [int(r[0]) for r in listed] == bad  # one errors file, in row order, global row numbers
    etag = event["Records"][0]["s3"]["object"]["eTag"]
    assert [r[1] for r in listed] == [f"{etag}-{n}" if (n - 1) % 2 == 0 else f"s{n - 1}" for n in bad]
    assert stored(who) == (100 - len(bad), 100 - len(bad))
    assert event_types(who).count("data_management.import_set.succeeded") == 1
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="results/.parts/")["KeyCount"] == 0


def test_slices_run_in_any_order_and_concurrently_count_once(aws, who, meter):
    event = put(who, "any.jsonl", jsonl([row(i, None if i % 3 else f"j{i}") for i in range(80)]))
    (_, slices) = (None, bulk.handle(event, lambda: 900_000)["continuations"])
    assert len(slices) > 3
    random.Random(7).shuffle(slices)
    threads = [
        threading.Thread(target=run_all, args=(s,)) for s in slices + slices[:2]
    ]  # two delivered twice
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = result(who, "any.jsonl")
    assert (out["records"], out["ingested"], out["errors"]) == (80, 80, 0)
    assert stored(who) == (80, 80)
    assert event_types(who).count("data_management.import_set.succeeded") == 1


def crash_second_slice_then_retry_all(monkeypatch, slices: list, after_writes: int) -> None:
    """Slice 1 dies right after its `after_writes`-th batch of writes; then every slice is
    delivered again, as S3 retries them, the crashed one included."""
    real, calls = event_store.record_many, []

    def crashing(events, **kw):
        out = real(events, **kw)
        calls.append(1)
        if len(calls) == after_writes:
            raise RuntimeError("injected crash after writing")
        return out

    monkeypatch.setattr(event_store, "record_many", crashing)
    with pytest.raises(RuntimeError):
        run_all(slices[1])
    monkeypatch.setattr(event_store, "record_many", real)
    for s in slices:
        run_all(s)


def test_a_slice_that_crashed_after_writing_resumes_exactly(aws, who, meter, monkeypatch):
    event = put(who, "crash.csv", rows_csv(100))
    slices = bulk.handle(event, lambda: 900_000)["continuations"]
    crash_second_slice_then_retry_all(monkeypatch, slices, after_writes=3)
    out = result(who, "crash.csv")
    assert (out["records"], out["ingested"]) == (100, 100 - len([i for i in range(100) if i % 7 == 3]))
    assert stored(who) == (out["ingested"], out["ingested"])
    assert int(errors(who, "crash.csv")[1][0]) == 4


def test_a_dead_slice_is_swept_and_a_dead_finisher_is_swept_too(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "_release", lambda *a: None)  # killed by timeouts: nothing runs after
    event = put(who, "dead.csv", rows_csv(60, bad=lambda i: False))
    slices = bulk.handle(event, lambda: 900_000)["continuations"]
    real_write, real_finish = bulk._write, bulk._finish

    def dies(accepted, sources, segment):
        raise MemoryError("injected")

    monkeypatch.setattr(bulk, "_write", dies)
    with pytest.raises(MemoryError):
        run_all(slices[0])
    monkeypatch.setattr(bulk, "_write", real_write)

    def finish_dies(*args, **kwargs):
        raise RuntimeError("injected crash of the finishing invocation")

    monkeypatch.setattr(bulk, "_finish", finish_dies)
    for s in slices[1:]:
        try:
            run_all(s)
        except RuntimeError:
            pass
    monkeypatch.setattr(bulk, "_finish", real_finish)
    sweep = {"detail-type": "Scheduled Event"}
    later = bulk.time.time() + bulk.LEASE_SECONDS + 1
    monkeypatch.setattr(bulk.time, "time", lambda: later)
    (follow_up,) = bulk.handle(sweep, lambda: 900_000)["continuations"]
    assert follow_up["continuation"]["slice"] == 0
    run_all(follow_up)  # the swept slice finishes and completes the file
    out = result(who, "dead.csv")
    assert (out["status"], out["records"], out["ingested"]) == ("succeeded", 60, 60)
    assert stored(who) == (60, 60)
    assert bulk.handle(sweep, lambda: 900_000) == {"continuations": []}  # done: unindexed


def test_a_slice_that_keeps_dying_fails_the_file_with_a_reason_once(aws, who, meter, monkeypatch):
    event = put(who, "poison.csv", rows_csv(60, bad=lambda i: False))
    slices = bulk.handle(event, lambda: 900_000)["continuations"]
    for s in slices[:-1]:
        run_all(s)
    real = bulk._write

    def dies(accepted, sources, segment):
        raise MemoryError("injected: out of memory on the same rows every time")

    monkeypatch.setattr(bulk, "_write", dies)
    for _ in range(3):
        with pytest.raises(MemoryError):
            run_all(slices[-1])
    monkeypatch.setattr(bulk, "_write", real)
    now = bulk.time.time()
    for sweep in range(bulk.MAX_SWEEPS + 1):
        later = now + (sweep + 1) * (bulk.LEASE_SECONDS + 1)
        monkeypatch.setattr(bulk.time, "time", lambda later=later: later)
        monkeypatch.setattr(bulk, "_write", dies)
        for follow_up in bulk.handle({"detail-type": "Scheduled Event"}, lambda: 900_000)["continuations"]:
            with pytest.raises(MemoryError):
                run_all(follow_up)
    out = result(who, "poison.csv")
    assert out["status"] == "failed" and "could not be processed past row" in out["failed_reason"]
    assert out["records"] == out["ingested"] and stored(who) == (out["ingested"], out["ingested"])
    assert event_types(who).count("data_management.import_set.failed") == 1


def test_small_gzip_and_quoted_files_are_read_whole(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "SLICE_BYTES", 10_000)
    quoted = rows_csv(40).replace(b",tokens,", b',"tokens",')
    run_all(put(who, "quoted.csv", quoted))
    run_all(put(who, "small.csv.gz", gzip.compress(rows_csv(30), mtime=0)))
    for name, count in (("quoted.csv", 40), ("small.csv.gz", 30)):
        assert progress_item(who, name)["slices"] == 0
        assert result(who, name)["records"] == count


# Files whose rows can't be cut by bytes (gzip, JSON arrays, quoted CSV) are re-chunked: a
# first pass writes their rows as JSON Lines parts, which slices ingest concurrently.


def json_rows(count: int) -> list[dict]:
    return [row(i, None if i % 2 == 0 else f"s{i}", "x" if i % 7 == 3 else "1") for i in range(count)]


RECHUNKED = {
    "big.csv.gz": lambda: gzip.compress(rows_csv(100), mtime=0),
    "big.jsonl.gz": lambda: gzip.compress(jsonl(json_rows(100)), mtime=0),
    "big.json": lambda: json.dumps(json_rows(100), indent=1).encode(),
    "quoted.csv": lambda: rows_csv(100).replace(b",tokens,", b',"tokens",'),
}


def other_account():
    _, account_id = create_key(secret=f"sk_test_{uuid.uuid4().hex[:12]}")
    other = Principal(account_id, False)
    body = {"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    meters.create(other, body | {"value_settings": {"event_payload_key": "tokens"}})
    return other


def read_whole(monkeypatch, name: str, body: bytes) -> tuple[dict, list]:
    """Result and errors of the same file read by one invocation (not split), in another account."""
    other = other_account()
    with monkeypatch.context() as m:
        m.setattr(bulk, "SLICE_BYTES", 1 << 30)
        assert run_all(put(other, name, body)) == 1
    out = result(other, name)
    return out, errors(other, name) if out["errors_file"] else []


def same_outcome(sliced: dict, whole: dict) -> bool:
    keys = ("status", "records", "ingested", "errors", "failed_reason")
    return [sliced[k] for k in keys] == [whole[k] for k in keys]


@pytest.mark.parametrize("name", list(RECHUNKED))
def test_a_file_not_cut_by_bytes_is_rechunked_and_gives_the_unsliced_result(
    aws, who, meter, monkeypatch, name
):
    body = RECHUNKED[name]()
    event = put(who, name, body)
    invocations = run_all(event)
    file = progress_item(who, name)
    assert file["slices"] >= 3 and invocations == file["slices"] + 1 and file["status"] == "done"
    whole, whole_errors = read_whole(monkeypatch, name, body)
    out = result(who, name)
    assert same_outcome(out, whole) and out["errors"] == len([i for i in range(100) if i % 7 == 3])
    assert errors(who, name) == whole_errors  # row numbers and derived identifiers of the whole file
    assert stored(who) == (out["ingested"], out["ingested"])
    assert event_types(who).count("data_management.import_set.succeeded") == 1
    s3 = boto3.client("s3")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix="results/.parts/")["KeyCount"] == 0


def test_a_broken_gzip_fails_after_the_rows_before_the_break_as_when_read_whole(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "SLICE_BYTES", 8000)
    monkeypatch.setattr(bulk, "BATCH_ROWS", 100)
    monkeypatch.setattr(bulk, "CHECKPOINT_ROWS", 200)
    body = gzip.compress(rows_csv(2000, bad=lambda i: False), mtime=0)[:-40]  # cut short
    run_all(put(who, "cut.csv.gz", body))
    assert progress_item(who, "cut.csv.gz")["slices"] >= 2
    whole, _ = read_whole(monkeypatch, "cut.csv.gz", body)
    out = result(who, "cut.csv.gz")
    assert out["status"] == "failed" and out["records"] > 0 and same_outcome(out, whole)
    assert stored(who) == (out["ingested"], out["ingested"])
    assert event_types(who).count("data_management.import_set.failed") == 1


def test_a_first_pass_that_crashed_is_redone_and_counts_once(aws, who, meter, monkeypatch):
    body = gzip.compress(jsonl(json_rows(100)), mtime=0)
    event = put(who, "redo.jsonl.gz", body)
    client, failures = bulk.aws.s3(), []
    real_put = client.put_object

    def flaky_put(**kwargs):
        if "/rows-00002" in kwargs["Key"] and not failures:
            failures.append(kwargs["Key"])
            raise ConnectionError("injected: the first pass died writing its third part")
        return real_put(**kwargs)

    monkeypatch.setattr(client, "put_object", flaky_put)
    with pytest.raises(ConnectionError):
        bulk.handle(event, lambda: 900_000)
    assert failures and progress_item(who, "redo.jsonl.gz").get("slices") is None
    slices = bulk.handle(event, lambda: 900_000)["continuations"]  # S3's retry: the pass again
    for s in slices + slices[:2]:  # two slices delivered twice
        run_all(s)
    out = result(who, "redo.jsonl.gz")
    whole, whole_errors = read_whole(monkeypatch, "redo.jsonl.gz", body)
    assert same_outcome(out, whole) and errors(who, "redo.jsonl.gz") == whole_errors
    assert stored(who) == (out["ingested"], out["ingested"])


def test_a_rechunked_slice_that_crashed_after_writing_resumes_exactly(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "SLICE_BYTES", 1500)  # parts of about 12 rows: 3 batches
    event = put(who, "crash.json", RECHUNKED["big.json"]())
    slices = bulk.handle(event, lambda: 900_000)["continuations"]
    crash_second_slice_then_retry_all(monkeypatch, slices, after_writes=2)
    out = result(who, "crash.json")
    bad = len([i for i in range(100) if i % 7 == 3])
    assert (out["records"], out["ingested"], out["errors"]) == (100, 100 - bad, bad)
    assert stored(who) == (out["ingested"], out["ingested"])


IDENTIFIERS = st.one_of(st.none(), st.sampled_from([f"k{i}" for i in range(8)]))


@examples(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(IDENTIFIERS, st.sampled_from(["1", "2", "x"])), min_size=1, max_size=60),
    slice_bytes=st.integers(60, 400),
    crashes=st.lists(st.integers(1, 6), max_size=3),
    seed=st.integers(0, 1000),
    fmt=st.sampled_from([".jsonl", ".json", ".jsonl.gz"]),
)
def test_sliced_files_never_count_a_row_twice(aws, monkeypatch, rows, slice_bytes, crashes, seed, fmt):
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
    monkeypatch.setattr(bulk, "SLICE_BYTES", slice_bytes)
    listed = [row(i, ident, tokens) for i, (ident, tokens) in enumerate(rows)]
    body = json.dumps(listed, indent=1).encode() if fmt == ".json" else jsonl(listed)
    body = gzip.compress(body, mtime=0) if fmt.endswith(".gz") else body
    name = f"p{fmt}"
    event = put(who, name, body)
    real, plan, calls = event_store.record_many, list(crashes), {"n": 0}

    def crashing(events, **kw):
        out = real(events, **kw)
        calls["n"] += 1
        if plan and calls["n"] == plan[0]:
            plan.pop(0)
            calls["n"] = 0
            raise RuntimeError("injected crash after writing")
        return out

    monkeypatch.setattr(event_store, "record_many", crashing)
    pick = random.Random(seed)
    pending = [event]
    for _ in range(500):
        if not pending:
            break
        current = pending.pop(pick.randrange(len(pending)))
        try:
            pending += bulk.handle(current, lambda: 900_000)["continuations"]
        except RuntimeError:
            pending.append(current)  # S3 / Lambda retry the invocation
    monkeypatch.setattr(event_store, "record_many", real)
    out = result(who, name)
    count, _ = stored(who)
    valid = [(i, ident) for i, (ident, tokens) in enumerate(rows) if tokens != "x"]
    named = {ident for _, ident in valid if ident is not None}
    anonymous = [i for i, ident in valid if ident is None]
    assert count == out["ingested"] == len(named) + len(anonymous)
    assert out["records"] == len(rows) and out["records"] == out["ingested"] + out["errors"]


def test_at_most_so_many_slices_run_at_once_and_each_end_starts_the_next(aws, who, meter, monkeypatch):
    monkeypatch.setattr(bulk, "CONCURRENT_SLICES", 2)
    event = put(who, "chain.csv", rows_csv(100, bad=lambda i: False))
    first = bulk.handle(event, lambda: 900_000)["continuations"]
    assert [c["continuation"]["slice"] for c in first] == [0, 1]
    sweep = {"detail-type": "Scheduled Event"}
    swept = bulk.handle(sweep, lambda: 900_000)["continuations"]  # not started yet: started again at most
    assert {c["continuation"]["slice"] for c in swept} <= {0, 1}  # the others wait their turn
    nxt = bulk.handle(first[0], lambda: 900_000)["continuations"]
    assert [c["continuation"]["slice"] for c in nxt] == [2]
    run_all(first[1])  # starts 3, which starts 5, ...
    later = bulk.time.time() + bulk.LEASE_SECONDS + 1
    monkeypatch.setattr(bulk.time, "time", lambda: later)
    for follow_up in bulk.handle(sweep, lambda: 900_000)["continuations"]:  # 2's start was "lost"
        run_all(follow_up)
    out = result(who, "chain.csv")
    assert (out["records"], out["ingested"]) == (100, 100) and stored(who) == (100, 100)
