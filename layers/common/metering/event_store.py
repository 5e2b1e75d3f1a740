"""Meter events in DynamoDB, written with conditional writes only.

Items (table EVENTS_TABLE, every key starts with the scope: account and mode):
- event  `A#<scope>#ID#<identifier>` / `EV`: one per accepted identifier. The put is
  conditional on the key not existing, which is the identifier dedup (an identifier is
  refused for as long as its event is kept: RETENTION_SECONDS, well over Stripe's 24 h).
  For raw meters this single item is the event that counts.
- slot   `A#<scope>#SLOT#<meter>#<customer>#<window start>` / `SLOT`: pre-aggregated
  meters. It holds the most recently received event of its (meter, customer, UTC
  window); a put replaces it only when its receipt sequence is newer (conditional), so
  concurrent writers leave the newest one. The event item of a pre-aggregated event
  records the identifier; the slot is what counts.

The aggregate function reads this table's stream; nothing here touches rollups.
"""

import functools
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from botocore.exceptions import ClientError

from metering import aws, clock, store
from metering.config import settings
from metering.errors import idempotency_mismatch
from metering.ids import monotonic_ns
from metering.keys import key, part
from metering.meter_events import Accepted, Rejected, reject
from metering.wire import format_decimal

RETENTION_SECONDS = 45 * 24 * 3600
WINDOW_SECONDS = {"hour": 3600, "day": 86400}
NEW = "attribute_not_exists(pk)"


@dataclass(frozen=True)
class Stored:
    event: Accepted
    received: int
    counted: bool  # False when a newer event already holds its pre-aggregation slot
    replayed: bool = False  # found already stored from the same source (a retry)


def event_key(scope: str, identifier: str) -> dict:
    return {"pk": key("A", scope, "ID", part(identifier)), "sk": "EV"}


def slot_key(scope: str, meter_id: str, customer: str, window_start: int) -> dict:
    return {"pk": key("A", scope, "SLOT", meter_id, part(customer), str(window_start)), "sk": "SLOT"}


def window_start(timestamp: int, window: str) -> int:
    size = WINDOW_SECONDS[window]
    return timestamp - timestamp % size


def duplicate(identifier: str) -> Rejected:
    return reject(
        "duplicate_identifier", f"An event already exists with identifier {identifier}.", "identifier"
    )


def _attributes(
    event: Accepted, seq: str, received: int, source: str | None, fingerprint: str | None
) -> dict:
    return {
        "src": source,
        "fp": fingerprint,
        "scope": event.scope,
        "mid": event.meter["id"],
        "en": event.event_name,
        "f": event.formula,
        "cust": event.customer,
        "ts": event.timestamp,
        "v": format_decimal(event.value) if event.value is not None else None,
        "ident": event.identifier,
        "seq": seq,
        "rcv": received,
        "payload": event.payload,
        "live": event.livemode,
        "st": "ok",
        "expires_at": received + RETENTION_SECONDS,
        "al": event.meter.get("alerts") or None,  # the meter has billing alerts (alert_counters)
    }


def record(event: Accepted, source: str | None = None, fingerprint: str | None = None) -> Stored:
    """Store one accepted event; raises Rejected(duplicate_identifier) for a seen identifier.

    `source` tags where the event came from (a bulk file's row): storing the same event
    again from the same source is not a duplicate but the earlier write, so a bulk file
    resumed after a crash never reports its own rows as duplicates.
    """
    received = int(clock.now())
    seq = f"{monotonic_ns():020d}"
    attrs = _attributes(event, seq, received, source, fingerprint)
    table = settings().events_table
    window = event.meter.get("event_time_window")
    try:
        if not window:
            aws.dynamodb().put_item(
                TableName=table,
                Item=store.to_item({**event_key(event.scope, event.identifier), **attrs, "t": "raw"}),
                ConditionExpression=NEW,
            )
            return Stored(event, received, True)
        return _record_pre_aggregated(event, attrs, window, table)
    except ClientError as exc:
        if store.error_code(exc) != "ConditionalCheckFailedException":
            store.raise_retryable(exc)
            raise
        return _earlier_write(event, source, fingerprint, exc)
    except Rejected as exc:
        if exc.code != "duplicate_identifier":
            raise
        return _earlier_write(event, source, fingerprint, exc)


def stored_from(event: Accepted, source: str, fingerprint: str | None = None) -> Stored | None:
    """The event as stored from `source` (a retry, or a write whose answer was lost), or None.

    A request with the same source but another fingerprint (an Idempotency-Key reused with
    other parameters) is an idempotency error."""
    key_ = event_key(event.scope, event.identifier)
    existing = store.get(settings().events_table, key_["pk"], key_["sk"], consistent=True)
    return _as_stored(event, source, fingerprint, existing)


def _as_stored(event: Accepted, source: str, fingerprint: str | None, existing: dict | None) -> Stored | None:
    if not existing or existing.get("src") != source:
        return None
    if existing.get("fp") != fingerprint:
        raise idempotency_mismatch(source.partition("#")[2])
    stored = replace(event, timestamp=int(existing["ts"]))  # as first stored (a default timestamp)
    return Stored(stored, int(existing["rcv"]), existing.get("st") != "superseded", replayed=True)


def _earlier_write(event: Accepted, source: str | None, fingerprint: str | None, exc: Exception) -> Stored:
    """The same event already stored from the same source, or a duplicate error."""
    earlier = stored_from(event, source, fingerprint) if source is not None else None
    if earlier is None:
        raise duplicate(event.identifier) from exc
    return earlier


def _record_pre_aggregated(event: Accepted, attrs: dict, window: str, table: str) -> Stored:
    start = window_start(event.timestamp, window)
    slot = slot_key(event.scope, event.meter["id"], event.customer, start)
    ident = {
        **event_key(event.scope, event.identifier),
        **attrs,
        "t": "pre",
        "slot": slot["pk"],
        "ws": start,
    }
    for attempt in range(5):
        try:
            aws.dynamodb().transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": table, "Item": store.to_item(ident), "ConditionExpression": NEW}},
                    {
                        "Put": {
                            "TableName": table,
                            "Item": store.to_item({**slot, **attrs, "t": "slot", "ws": start}),
                            "ConditionExpression": "attribute_not_exists(pk) OR seq < :seq",
                            "ExpressionAttributeValues": store.values({":seq": attrs["seq"]}),
                        }
                    },
                ]
            )
            return Stored(event, attrs["rcv"], True)
        except ClientError as exc:
            if store.error_code(exc) != "TransactionCanceledException":
                raise
            codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if codes and codes[0] == "ConditionalCheckFailed":
                raise duplicate(event.identifier) from exc
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                # A newer event already holds the window: this one is kept for dedup only.
                aws.dynamodb().put_item(
                    TableName=table,
                    Item=store.to_item({**ident, "st": "superseded"}),
                    ConditionExpression=NEW,
                )
                return Stored(event, attrs["rcv"], False)
            time.sleep(0.01 * (attempt + 1))  # transaction conflict with a concurrent writer: retry
    raise ClientError(
        {"Error": {"Code": "TransactionConflictException", "Message": "retries exhausted"}}, "Put"
    )


_RECORD = record  # see record_many


def record_many(
    events: list[Accepted], workers: int = 16, sources: list[str] | None = None
) -> list[Stored | Exception]:
    """Store many events; each result is Stored or the exception it raised (Rejected for a
    duplicate, anything else for a fault whose outcome is unknown), in the order given.

    Raw events go 25 at a time through PartiQL `BatchExecuteStatement` as `INSERT`s: an
    insert is refused per statement with `DuplicateItem` when the key exists, which is the
    same identifier dedup as `record`'s conditional put, at 1 WCU per event and one request
    per 25 events. Up to `workers` batches run concurrently. Pre-aggregated events keep
    `record`'s transaction, one per event, concurrently.

    `sources`, when given, tags each event (see `record`): a duplicate found stored from the
    same source is the earlier write of this event (`Stored`, replayed)."""
    tags = sources if sources is not None else [None] * len(events)
    pairs = list(zip(events, tags, strict=True))
    if record is not _RECORD:  # tests inject per-event faults by replacing `record`
        return _one_by_one(pairs, workers)
    window = [bool(event.meter.get("event_time_window")) for event, _ in pairs]
    futures = {i: _pool(workers).submit(_one, pair) for i, pair in enumerate(pairs) if window[i]}
    raw = [i for i in range(len(pairs)) if not window[i]]
    results: list = [None] * len(pairs)
    for i, result in zip(raw, _insert_all([pairs[i] for i in raw], workers), strict=True):
        results[i] = result
    for i, future in futures.items():
        results[i] = future.result()
    return results


def _one(pair: tuple[Accepted, str | None]) -> Stored | Exception:
    try:
        return record(*pair)
    except Exception as exc:  # Rejected, or a fault: the caller decides
        return exc


def _one_by_one(pairs: list, workers: int) -> list:
    if len(pairs) <= 1:
        return [_one(p) for p in pairs]
    return list(_pool(workers).map(_one, pairs))


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    """Writer threads kept for the life of the (warm) Lambda instead of started per request."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="event-writer")


# Batched inserts of raw events (PartiQL BatchExecuteStatement).

BATCH_STATEMENTS = 25  # DynamoDB's limit per BatchExecuteStatement
STATEMENT_ATTEMPTS = 3  # a throttled statement is tried again (botocore retries whole requests only)
NOT_APPLIED = {
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
    "TransactionConflict",
}
EXCEPTION_CODES = {  # a statement's error code as the exception code a single write would raise
    "ThrottlingError": "ThrottlingException",
    "ProvisionedThroughputExceeded": "ProvisionedThroughputExceededException",
    "TransactionConflict": "TransactionConflictException",
    "ConditionalCheckFailed": "ConditionalCheckFailedException",
    "ValidationError": "ValidationException",
    "ResourceNotFound": "ResourceNotFoundException",
    "AccessDenied": "AccessDeniedException",
    "ItemCollectionSizeLimitExceeded": "ItemCollectionSizeLimitExceededException",
}


@dataclass
class _Insert:
    event: Accepted
    source: str | None
    pk: str
    names: tuple[str, ...]  # the item's attribute names, in order
    params: str  # the item's values (DynamoDB JSON) as one JSON array
    received: int

    @property
    def item(self) -> dict:
        return dict(zip(self.names, json.loads(self.params), strict=True))

    def statement(self, table: str) -> "_Encoded":
        return _Encoded(
            f'{{"Statement":{_encode(_statement_text(table, self.names))},"Parameters":{self.params}}}'
        )


@dataclass(frozen=True)
class _Encoded:
    """A statement already written as JSON, for the hot client's body (`_JsonBody`)."""

    text: str

    def decoded(self) -> dict:
        return json.loads(self.text)


_encode = json.encoder.encode_basestring_ascii  # a JSON string, as json.dumps writes it


def insert_statement(table: str, item: dict) -> dict:
    """`INSERT INTO "<table>" VALUE {'name': ?, ...}` with the item's values as parameters."""
    return {"Statement": _statement_text(table, tuple(item)), "Parameters": list(item.values())}


@functools.lru_cache(maxsize=256)
def _statement_json(table: str, names: tuple[str, ...]) -> str:
    return _encode(_statement_text(table, names))


@functools.lru_cache(maxsize=256)
def _statement_text(table: str, names: tuple[str, ...]) -> str:
    """The statement of an item with these attribute names (events have a few shapes)."""
    fields = ", ".join("'" + name.replace("'", "''") + "': ?" for name in names)
    return f'INSERT INTO "{table}" VALUE {{{fields}}}'


def _insert_all(pairs: list[tuple[Accepted, str | None]], workers: int) -> list:
    """Raw events through batched inserts. Keys repeat (one identifier twice in a request or a
    file): each occurrence goes in a later round, so no batch names a key twice and the first
    occurrence is the one stored."""
    if not pairs:
        return []
    table = settings().events_table
    inserts, rounds, seen = [], [], {}
    for event, source in pairs:
        received = int(clock.now())
        pk, names, params = _raw_json(event, f"{monotonic_ns():020d}", received, source)
        occurrence = seen[pk] = seen.get(pk, -1) + 1
        if occurrence == len(rounds):
            rounds.append([])
        rounds[occurrence].append(len(inserts))
        inserts.append(_Insert(event, source, pk, names, params, received))
    results: list = [None] * len(inserts)
    for members in rounds:
        chunks = [members[i : i + BATCH_STATEMENTS] for i in range(0, len(members), BATCH_STATEMENTS)]
        if len(chunks) == 1 or workers <= 1:
            done = [_insert_chunk(table, [inserts[i] for i in chunk]) for chunk in chunks]
        else:
            done = list(_pool(workers).map(lambda c: _insert_chunk(table, [inserts[i] for i in c]), chunks))
        for chunk, outcomes in zip(chunks, done, strict=True):
            for i, outcome in zip(chunk, outcomes, strict=True):
                results[i] = outcome
    return results


def _raw_json(event: Accepted, seq: str, received: int, source: str | None) -> tuple[str, tuple, str]:
    """(pk, attribute names, values as a JSON array) of the item `record` puts for a raw event,
    `_to_item({**event_key(...), **_attributes(...), "t": "raw"})`, written as JSON text
    directly: building the item's maps and encoding them with json.dumps costs twice the CPU."""
    scope, payload = event.scope, event.payload
    pk = key("A", scope, "ID", part(event.identifier))
    names = ["pk", "sk"]
    values = [f'{{"S":{_encode(pk)}}}', '{"S":"EV"}']
    for name, v in (
        ("src", source),
        ("scope", scope),
        ("mid", event.meter["id"]),
        ("en", event.event_name),
        ("f", event.formula),
        ("cust", event.customer),
        ("ts", event.timestamp),
        ("v", format_decimal(event.value) if event.value is not None else None),
        ("ident", event.identifier),
        ("seq", seq),
    ):
        if v is not None:
            names.append(name)
            values.append(_json_value(v))
    names += ["rcv", "payload"]
    values.append(f'{{"N":"{received}"}}')
    if all(type(v) is str for v in payload.values()) and all(type(k) is str for k in payload):
        values.append(
            '{"M":{' + ",".join(f'{_encode(k)}:{{"S":{_encode(v)}}}' for k, v in payload.items()) + "}}"
        )
    else:
        values.append(json.dumps(_value(payload), separators=(",", ":")))
    if event.livemode is not None:
        names.append("live")
        values.append(_json_value(event.livemode))
    names += ["st", "expires_at"]
    values += ['{"S":"ok"}', f'{{"N":"{received + RETENTION_SECONDS}"}}']
    alerts = event.meter.get("alerts") or None
    if alerts is not None:
        names.append("al")
        values.append(_json_value(alerts))
    names.append("t")
    values.append('{"S":"raw"}')
    return pk, tuple(names), "[" + ",".join(values) + "]"


def _json_value(v) -> str:
    """`json.dumps(_value(v))` for the scalar types events hold."""
    kind = type(v)
    if kind is str:
        return f'{{"S":{_encode(v)}}}'
    if kind is int:
        return f'{{"N":"{v}"}}'
    if kind is bool:
        return '{"BOOL":true}' if v else '{"BOOL":false}'
    return json.dumps(_value(v), separators=(",", ":"))


def _to_item(data: dict) -> dict:
    """`store.to_item` for the hot path: the same DynamoDB JSON for the types events hold
    (strings, integers, booleans, maps and lists of them), anything else through boto3's
    serializer; about 5x cheaper per item."""
    return {k: _value(v) for k, v in data.items() if v is not None}


def _value(v) -> dict:
    kind = type(v)
    if kind is str:
        return {"S": v}
    if kind is bool:
        return {"BOOL": v}
    if kind is int:
        return {"N": str(v)}
    if kind is dict:
        return {"M": {k: _value(x) for k, x in v.items()}}
    if kind is list:
        return {"L": [_value(x) for x in v]}
    if v is None:
        return {"NULL": True}
    return store.to_item({"v": v})["v"]


def _insert_chunk(table: str, chunk: list[_Insert]) -> list:
    """One batch (<= 25 inserts, distinct keys): Stored, Rejected or the fault, per insert."""
    out: dict[int, object] = {}
    duplicates: list[int] = []
    pending = list(range(len(chunk)))
    writer = _writer()
    encoded = isinstance(getattr(writer, "_serializer", None), _JsonBody)  # else plain parameters
    for attempt in range(STATEMENT_ATTEMPTS):
        try:
            statements = [
                chunk[i].statement(table) if encoded else insert_statement(table, chunk[i].item)
                for i in pending
            ]
            responses = writer.batch_execute_statement(Statements=statements)["Responses"]
        except Exception as exc:  # the request failed after botocore's retries: outcome unknown
            for i in pending:
                out[i] = exc
            break
        retry = []
        for i, response in zip(pending, responses, strict=True):
            error = response.get("Error")
            if not error:
                out[i] = Stored(chunk[i].event, chunk[i].received, True)
                continue
            code = error.get("Code", "")
            if code == "DuplicateItem":
                duplicates.append(i)
                continue
            out[i] = _fault(error)
            # Refused without being applied; or failed inside (it may be written), when a source
            # tag will recognise the earlier write as this event.
            if code in NOT_APPLIED or (code == "InternalServerError" and chunk[i].source is not None):
                retry.append(i)
        if not retry:
            break
        pending = retry
        if attempt + 1 < STATEMENT_ATTEMPTS:
            time.sleep(0.025 * 2**attempt * (1 + random.random()))
    for i, outcome in _earlier_writes(table, [(i, chunk[i]) for i in duplicates]):
        out[i] = outcome
    return [out[i] for i in range(len(chunk))]


def _fault(error: dict) -> ClientError:
    code = error.get("Code", "")
    return ClientError(
        {"Error": {"Code": EXCEPTION_CODES.get(code, code), "Message": error.get("Message", "")}},
        "BatchExecuteStatement",
    )


def _earlier_writes(table: str, duplicates: list[tuple[int, _Insert]]):
    """For inserts refused as DuplicateItem: the earlier write of the same source (one
    consistent BatchGetItem for up to 100), else a duplicate_identifier rejection."""
    tagged = [(i, insert) for i, insert in duplicates if insert.source is not None]
    for i, insert in duplicates:
        if insert.source is None:
            yield i, duplicate(insert.event.identifier)
    for start in range(0, len(tagged), 100):
        group = tagged[start : start + 100]
        try:
            found = _consistent_get(table, [event_key(x.event.scope, x.event.identifier) for _, x in group])
        except Exception as exc:
            for i, _ in group:
                yield i, exc
            continue
        for i, insert in group:
            key_ = event_key(insert.event.scope, insert.event.identifier)
            try:
                earlier = _as_stored(insert.event, insert.source, None, found.get(key_["pk"]))
                yield i, earlier if earlier is not None else duplicate(insert.event.identifier)
            except Exception as exc:  # an idempotency mismatch
                yield i, exc


def _consistent_get(table: str, keys: list[dict]) -> dict[str, dict]:
    """Items by pk, read with BatchGetItem (consistent), unprocessed keys read again."""
    found: dict[str, dict] = {}
    request = {table: {"Keys": [store.to_item(k) for k in keys], "ConsistentRead": True}}
    for attempt in range(5):
        out = _writer().batch_get_item(RequestItems=request)
        for raw in out.get("Responses", {}).get(table, []):
            item = store.from_item(raw)
            found[item["pk"]] = item
        request = out.get("UnprocessedKeys") or {}
        if not request:
            return found
        time.sleep(0.025 * 2**attempt * (1 + random.random()))
    raise ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "unprocessed keys"}},
        "BatchGetItem",
    )


_writer_lock = threading.Lock()
_writer_of: tuple = (None, None)  # (the shared client, the hot-path client made from it)


def _writer():
    """The client of the batched writes: the shared client's settings without botocore's
    parameter validation (our requests are built here; validating 25 items per call costs
    CPU on the hot path). A replaced `aws.dynamodb` (tests wrap the client) is used as is."""
    global _writer_of
    base = aws.dynamodb()
    if not hasattr(aws.dynamodb, "cache_info"):
        return base
    if _writer_of[0] is not base:
        with _writer_lock:
            if _writer_of[0] is not base:
                import boto3
                from botocore.config import Config

                config = base.meta.config.merge(Config(parameter_validation=False))
                client = boto3.client("dynamodb", config=config)
                if hasattr(client, "_serializer"):
                    client._serializer = _JsonBody(client._serializer)
                endpoint = getattr(client, "_endpoint", None)
                if hasattr(endpoint, "_response_parser_factory"):
                    endpoint._response_parser_factory = _JsonParsers(endpoint._response_parser_factory)
                _writer_of = (base, client)
    return _writer_of[1]


def _dumps(value) -> str:
    return json.dumps(value, separators=(",", ":"))


class _JsonBody:
    """botocore's request serializer, except that a BatchExecuteStatement body is written by
    `json.dumps`: in DynamoDB's JSON protocol the body of these parameters (strings, maps,
    lists, booleans: AttributeValues without binary) is the parameters themselves, and
    walking botocore's shape model for 25 items of 20 attributes costs ~1 ms of CPU per call.
    Anything json.dumps can't write as is goes through botocore."""

    def __init__(self, real):
        self._real = real

    def serialize_to_request(self, parameters, operation_model):
        if operation_model.name != "BatchExecuteStatement":
            return self._real.serialize_to_request(parameters, operation_model)
        statements = parameters.get("Statements")
        if isinstance(statements, list) and any(isinstance(s, _Encoded) for s in statements):
            if set(parameters) == {"Statements"}:
                texts = [s.text if isinstance(s, _Encoded) else _dumps(s) for s in statements]
                request = self._real.serialize_to_request({"Statements": []}, operation_model)
                request["body"] = ('{"Statements":[' + ",".join(texts) + "]}").encode("utf-8")
                return request
            statements = [s.decoded() if isinstance(s, _Encoded) else s for s in statements]
            parameters = {**parameters, "Statements": statements}
        try:
            body = _dumps(parameters).encode("utf-8")
        except (TypeError, ValueError):
            return self._real.serialize_to_request(parameters, operation_model)
        request = self._real.serialize_to_request({"Statements": []}, operation_model)
        request["body"] = body
        return request

    def __getattr__(self, name):
        return getattr(self._real, name)


FAST_OUTPUTS = {"BatchExecuteStatementOutput"}


class _JsonParsers:
    """botocore's response parser factory, except that the body of a successful
    BatchExecuteStatement answer is taken as `json.loads` gives it: its members (Responses of
    TableName and Error code and message; the inserts return no items) are JSON as modelled,
    and walking the shape model for 25 responses costs more CPU than the request's signing.
    Error answers, metadata and every other operation go through botocore as usual."""

    def __init__(self, real):
        self._real = real

    def create_parser(self, protocol_name):
        parser = self._real.create_parser(protocol_name)
        handle = getattr(parser, "_handle_json_body", None)
        if handle is None:
            return parser

        def handle_json_body(raw_body, shape):
            if shape is not None and shape.name in FAST_OUTPUTS:
                return parser._parse_body_as_json(raw_body)
            return handle(raw_body, shape)

        parser._handle_json_body = handle_json_body
        return parser

    def __getattr__(self, name):
        return getattr(self._real, name)
