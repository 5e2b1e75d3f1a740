"""Raw events stored 25 at a time with PartiQL INSERTs (BatchExecuteStatement) against moto.

An INSERT of an existing key is refused per statement (DuplicateItem), which is the
identifier dedup; the rest of the batch is stored. Per-statement faults belong to their
event only. Stream records are produced for inserted items, so the rollups count them.
"""

import json
import time
from decimal import Decimal

import boto3
import pytest
from botocore.exceptions import ClientError

from metering import event_store, ingest, meters, store, summaries
from metering.accounts import Principal
from metering.config import settings
from metering.meter_events import Rejected, check
from tests.streams import stream_pump

A = Principal("acct_batches", False)
NOW = int(time.time())
DAY = 86400


@pytest.fixture
def meter(aws):
    params = {"display_name": "m", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}
    return meters.create(A, params)


def accepted(identifier: str, value: str = "1", name: str = "tokens", customer: str = "c"):
    fields = {
        "event_name": name,
        "identifier": identifier,
        "payload": {"stripe_customer_id": customer, "value": value},
    }
    return check(A.account_id, False, fields, NOW - 60)


def stored_values() -> dict[str, str]:
    from metering.store import from_item

    items = boto3.client("dynamodb").scan(TableName=settings().events_table)["Items"]
    return {i["ident"]: i["v"] for i in map(from_item, items) if i.get("t") == "raw"}


def refused(statement: dict, code: str) -> dict:
    """The answer to a statement DynamoDB refused without applying it (moto applied it: undo)."""
    key = {"pk": statement["Parameters"][0], "sk": statement["Parameters"][1]}
    boto3.client("dynamodb").delete_item(TableName=settings().events_table, Key=key)
    return {"Error": {"Code": code, "Message": "injected"}}


class Calls:
    """Counts the hot client's calls by operation; optionally rewrites statement answers."""

    def __init__(self, monkeypatch, answer=None):
        self.real, self.ops, self.answer = event_store._writer(), [], answer
        monkeypatch.setattr(event_store, "_writer", lambda: self)

    def batch_execute_statement(self, Statements):
        self.ops.append("BatchExecuteStatement")
        out = self.real.batch_execute_statement(Statements=Statements)
        if self.answer:
            out["Responses"] = [self.answer(s, r) for s, r in zip(Statements, out["Responses"], strict=True)]
        return out

    def batch_get_item(self, **kwargs):
        self.ops.append("BatchGetItem")
        return self.real.batch_get_item(**kwargs)


def test_moto_refuses_a_duplicate_insert_per_statement_and_applies_the_others(aws):
    client, table = boto3.client("dynamodb"), settings().events_table
    item = {"pk": {"S": "X#1"}, "sk": {"S": "EV"}, "v": {"S": "first"}}
    first = client.batch_execute_statement(Statements=[event_store.insert_statement(table, item)])
    assert "Error" not in first["Responses"][0]
    batch = [
        event_store.insert_statement(table, {"pk": {"S": "X#0"}, "sk": {"S": "EV"}, "v": {"S": "a"}}),
        event_store.insert_statement(table, {**item, "v": {"S": "second"}}),
        event_store.insert_statement(table, {"pk": {"S": "X#2"}, "sk": {"S": "EV"}, "v": {"S": "b"}}),
    ]
    responses = client.batch_execute_statement(Statements=batch)["Responses"]
    assert ["Error" in r for r in responses] == [False, True, False]
    assert responses[1]["Error"]["Code"] == "DuplicateItem"
    stored = {i["pk"]["S"]: i["v"]["S"] for i in client.scan(TableName=table)["Items"]}
    assert stored == {"X#0": "a", "X#1": "first", "X#2": "b"}  # the duplicate overwrote nothing
    again = [batch[0], {**batch[0]}]  # the same key twice in one batch is refused as a whole
    with pytest.raises(ClientError) as err:
        client.batch_execute_statement(Statements=again)
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_inserted_items_produce_stream_records_and_count(aws, meter):
    events = [
        {"event_name": "tokens", "identifier": f"s{i}", "payload": {"stripe_customer_id": "c", "value": "2"}}
        for i in range(60)
    ]
    assert ingest.stream(A, {"events": events}) == {}
    stream_pump(aws).settle()
    now = int(time.time())  # not the module's NOW: the events were stamped just now
    params = {"customer": "c", "start_time": str(now - now % 60 - DAY), "end_time": str(now - now % 60 + 60)}
    (summary,) = summaries.list_summaries(A, meter["id"], params)["data"]
    assert Decimal(str(summary["aggregated_value"])) == 120


def test_one_request_per_25_raw_events_and_results_in_order(aws, meter, monkeypatch):
    calls = Calls(monkeypatch)
    events = [accepted(f"r{i}", str(i)) for i in range(100)]
    results = event_store.record_many(events, workers=8, sources=[f"src#{i}" for i in range(100)])
    assert calls.ops == ["BatchExecuteStatement"] * 4
    assert [r.event.identifier for r in results] == [f"r{i}" for i in range(100)]
    assert all(isinstance(r, event_store.Stored) and not r.replayed for r in results)
    assert stored_values() == {f"r{i}": str(i) for i in range(100)}


def test_duplicates_in_and_across_batches_are_refused_and_earlier_writes_are_replays(aws, meter, monkeypatch):
    event_store.record_many([accepted("old", "7")], sources=["file#1"])
    event_store.record_many([accepted("mine", "8")], sources=["file#2"])
    calls = Calls(monkeypatch)
    events = [accepted("new", "1"), accepted("old", "2"), accepted("new", "3"), accepted("mine", "8")]
    results = event_store.record_many(events, sources=["file#3", "file#4", "file#5", "file#2"])
    assert isinstance(results[0], event_store.Stored) and not results[0].replayed
    assert isinstance(results[1], Rejected) and results[1].code == "duplicate_identifier"
    assert isinstance(results[2], Rejected) and results[2].code == "duplicate_identifier"  # same request
    assert isinstance(results[3], event_store.Stored) and results[3].replayed  # its own earlier write
    assert stored_values() == {"old": "7", "mine": "8", "new": "1"}  # the first occurrence is stored
    assert calls.ops.count("BatchExecuteStatement") == 2  # the repeated key goes in a second round
    untagged = event_store.record_many([accepted("old", "9")])
    assert isinstance(untagged[0], Rejected)


def test_a_statement_fault_belongs_to_its_event_only(aws, meter, monkeypatch):
    monkeypatch.setattr(event_store.time, "sleep", lambda s: None)

    def throttle_f1(statement, response):
        if "Error" not in response and any(p.get("S") == "f1" for p in statement["Parameters"]):
            return refused(statement, "ThrottlingError")
        return response

    Calls(monkeypatch, throttle_f1)
    results = event_store.record_many([accepted(f"f{i}") for i in range(3)], sources=["a", "b", "c"])
    assert isinstance(results[0], event_store.Stored) and isinstance(results[2], event_store.Stored)
    assert isinstance(results[1], ClientError)
    assert results[1].response["Error"]["Code"] == "ThrottlingException"  # retryable, as a 429
    assert set(stored_values()) == {"f0", "f2"}


def test_a_throttled_statement_is_tried_again(aws, meter, monkeypatch):
    monkeypatch.setattr(event_store.time, "sleep", lambda s: None)
    throttled = []

    def once(statement, response):
        if not throttled and "Error" not in response:
            throttled.append(1)
            return refused(statement, "ProvisionedThroughputExceeded")
        return response

    calls = Calls(monkeypatch, once)
    (result,) = event_store.record_many([accepted("t1")])
    assert isinstance(result, event_store.Stored) and calls.ops == ["BatchExecuteStatement"] * 2


@pytest.mark.parametrize("source", ["stream#r#0", None])
def test_an_internal_error_after_writing_is_recognised_by_its_source(aws, meter, monkeypatch, source):
    monkeypatch.setattr(event_store.time, "sleep", lambda s: None)
    lost = []

    def lose_first_answer(statement, response):
        if not lost:
            lost.append(1)  # the write happened; its answer was lost
            return {"Error": {"Code": "InternalServerError", "Message": "lost"}}
        return response

    Calls(monkeypatch, lose_first_answer)
    (result,) = event_store.record_many([accepted("lost1")], sources=[source] if source else None)
    if source:
        assert isinstance(result, event_store.Stored) and result.replayed
    else:  # no tag to recognise it by: the outcome is unknown, and said so
        assert isinstance(result, ClientError) and result.response["Error"]["Code"] == "InternalServerError"
    assert stored_values() == {"lost1": "1"}


def test_a_failed_request_is_a_fault_for_each_of_its_events(aws, meter, monkeypatch):
    class Down:
        def batch_execute_statement(self, **kwargs):
            raise ClientError(
                {"Error": {"Code": "InternalServerError", "Message": "down"}}, "BatchExecuteStatement"
            )

    monkeypatch.setattr(event_store, "_writer", Down)
    results = event_store.record_many([accepted("d1"), accepted("d2")], sources=["x", "y"])
    assert all(isinstance(r, ClientError) for r in results)


def test_pre_aggregated_events_keep_their_transaction_beside_raw_batches(aws, meter, monkeypatch):
    params = {"display_name": "p", "event_name": "pre", "default_aggregation": {"formula": "sum"}}
    meters.create(A, params | {"event_time_window": "hour"})
    calls = Calls(monkeypatch)
    events = [accepted("raw1"), accepted("pre1", "4", name="pre"), accepted("raw2")]
    results = event_store.record_many(events)
    assert all(isinstance(r, event_store.Stored) for r in results)
    assert calls.ops == ["BatchExecuteStatement"]  # the pre-aggregated one went through its transaction
    assert set(stored_values()) == {"raw1", "raw2"}


def test_a_stream_request_with_a_throttled_statement_answers_200_and_counts_once(aws, meter, monkeypatch):
    monkeypatch.setattr(event_store.time, "sleep", lambda s: None)
    monkeypatch.setattr(ingest, "BACKOFF_SECONDS", 0)
    budget = {"n": 4}  # more than the statement retries: ingest's own retry finishes it

    def throttle(statement, response):
        if (
            "Error" not in response
            and budget["n"] > 0
            and any(p.get("S") == "z1" for p in statement["Parameters"])
        ):
            budget["n"] -= 1
            return refused(statement, "ThrottlingError")
        return response

    Calls(monkeypatch, throttle)
    events = [
        {"event_name": "tokens", "identifier": f"z{i}", "payload": {"stripe_customer_id": "c", "value": "1"}}
        for i in range(3)
    ]
    assert ingest.stream(A, {"events": events}) == {}
    assert stored_values() == {"z0": "1", "z1": "1", "z2": "1"}


def test_the_hot_serializer_writes_what_boto3_writes():
    from decimal import Decimal as D

    from metering import store

    data = {"s": "x", "e": "", "n": 12, "neg": -3, "b": True, "f": False, "d": D("1.50"), "none": None}
    data |= {"m": {"a": "1", "b": {"c": [1, "2", None, True]}}, "l": [], "u": "é𝄞"}
    assert event_store._to_item(data) == store.to_item(data)


def test_the_hot_client_sends_the_body_botocore_would_send(aws):
    import json

    client = event_store._writer()
    item = event_store._to_item({"pk": "A#x", "sk": "EV", "payload": {"k": "é\u2028\"'"}, "n": 5, "ok": True})
    params = {"Statements": [event_store.insert_statement("EventsTable", item)]}
    model = client.meta.service_model.operation_model("BatchExecuteStatement")
    fast = client._serializer.serialize_to_request(params, model)
    slow = client._serializer._real.serialize_to_request(params, model)
    assert json.loads(fast["body"]) == json.loads(slow["body"])
    assert {k: v for k, v in fast.items() if k != "body"} == {k: v for k, v in slow.items() if k != "body"}


def test_the_hot_path_item_is_the_item_of_a_single_write(aws, meter):
    """`_raw_json` writes, attribute for attribute and in order, what `record`'s put stores."""
    from dataclasses import replace

    ODD = 'c"\\é\u2028😀'  # noqa: N806  (quotes, a backslash, non-ASCII, a line separator, astral)
    base = accepted("same", "2.50")
    variants = [
        base,
        replace(base, value=None, payload={"stripe_customer_id": "c"}),
        replace(base, meter={**base.meter, "alerts": 3}),
        replace(base, identifier="it's", livemode=True),
        replace(base, payload={"stripe_customer_id": ODD, "k'ey": "\x01"}, customer=ODD),
    ]
    for event in variants:
        for source in ("file#7", None):
            attrs = event_store._attributes(event, "00000000000000000042", 1234, source, None)
            key = event_store.event_key(event.scope, event.identifier)
            expected = store.to_item({**key, **attrs, "t": "raw"})
            pk, names, params = event_store._raw_json(event, "00000000000000000042", 1234, source)
            assert pk == expected["pk"]["S"]
            assert list(names) == list(expected)
            assert json.loads(params) == list(expected.values())


def test_the_insert_answer_is_read_as_botocore_reads_it(aws, meter):
    """The hot client takes a BatchExecuteStatement answer as JSON: the same as botocore's parse."""
    table = settings().events_table
    item = {"pk": {"S": "Y#1"}, "sk": {"S": "EV"}, "v": {"S": "a"}}
    statements = [event_store.insert_statement(table, item), event_store.insert_statement(table, {**item})]
    boto3.client("dynamodb").batch_execute_statement(Statements=statements[:1])
    fast = event_store._writer().batch_execute_statement(Statements=statements[1:])
    plain = boto3.client("dynamodb").batch_execute_statement(Statements=statements[1:])
    assert fast["Responses"] == plain["Responses"]
    assert fast["Responses"][0]["Error"]["Code"] == "DuplicateItem"
    assert fast["ResponseMetadata"]["HTTPStatusCode"] == 200
