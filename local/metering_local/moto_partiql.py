"""PartiQL `INSERT` in moto's `BatchExecuteStatement`, answered as DynamoDB answers it.

DynamoDB refuses an `INSERT` whose key already exists: the statement gets the error
`DuplicateItem` in its own slot of the response and the other statements of the batch
are applied. moto 5.2.5 runs each statement through its generic PartiQL engine, which
overwrites the existing item instead (and copies every table into the engine's input for
every statement, so a batch costs O(all items)). The identifier dedup of the events table
rests on the refusal, so the local runner and the tests need it.

Here a parameterised insert, `INSERT INTO "<table>" VALUE {'a': ?, 'b': ?, ...}` (the only
form the service writes), is applied directly: under moto_atomic's lock (so it is atomic
against every other write), refused with `DuplicateItem` when the key exists, otherwise
stored with the table's own put (same validation, same stream record). A batch naming the
same key twice is refused as a whole, as BatchWriteItem refuses it (the service never
sends one). Every other statement keeps moto's behaviour, under the same lock.
"""

import functools
import re

_INSERT = re.compile(r'^\s*INSERT\s+INTO\s+"([^"]+)"\s+VALUE\s+\{(.*)\}\s*$', re.IGNORECASE | re.DOTALL)
_FIELD = re.compile(r"^\s*'((?:[^']|'')+)'\s*:\s*\?\s*$")


def parse_insert(statement: str, parameters: list) -> tuple[str, dict] | None:
    """(table, item) of a parameterised INSERT, or None for any other statement."""
    match = _INSERT.match(statement)
    if not match:
        return None
    fields = match.group(2).split(",") if match.group(2).strip() else []
    names = []
    for field in fields:
        name = _FIELD.match(field)
        if not name:
            return None  # literals, or a name with a comma in it: moto's own engine
        names.append(name.group(1).replace("''", "'"))
    if len(names) != len(parameters or []):
        return None
    return match.group(1), dict(zip(names, parameters, strict=True))


def install() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_metering_partiql", False):
        return
    original = DynamoDBBackend.batch_execute_statement

    @functools.wraps(original)
    def batch_execute_statement(self, statements):
        from metering_local.moto_atomic import _lock

        with _lock:
            inserts = [parse_insert(s["Statement"], s.get("Parameters", [])) for s in statements]
            if not any(inserts):
                return original(self, statements)
            _refuse_repeated_keys(self, inserts)
            return [
                _insert(self, *insert) if insert else original(self, [statement])[0]
                for statement, insert in zip(statements, inserts, strict=True)
            ]

    DynamoDBBackend.batch_execute_statement = batch_execute_statement
    DynamoDBBackend._metering_partiql = True


def _key(table, item: dict) -> tuple:
    from moto.dynamodb.models.dynamo_type import DynamoType

    hash_key = DynamoType(item[table.hash_key_attr]) if table.hash_key_attr in item else None
    range_key = (
        DynamoType(item[table.range_key_attr])
        if table.range_key_attr and table.range_key_attr in item
        else None
    )
    return hash_key, range_key


def _refuse_repeated_keys(backend, inserts: list) -> None:
    from moto.dynamodb.exceptions import MockValidationException

    seen = set()
    for insert in inserts:
        if not insert or insert[0] not in backend.tables:
            continue
        table = backend.tables[insert[0]]
        key = (insert[0], *(str(k.value) if k else None for k in _key(table, insert[1])))
        if key in seen:
            raise MockValidationException("Provided list of item keys contains duplicates")
        seen.add(key)


def _insert(backend, table_name: str, item: dict) -> dict:
    from moto.dynamodb.exceptions import DynamodbException

    table = backend.tables.get(table_name)
    if table is None:
        return {"Error": {"Code": "ResourceNotFound", "Message": "Requested resource not found"}}
    hash_key, range_key = _key(table, item)
    if hash_key is None or (table.range_key_attr and range_key is None):
        return {
            "TableName": table_name,
            "Error": {"Code": "ValidationError", "Message": "One of the required keys was not given a value"},
        }
    if table.get_item(hash_key, range_key) is not None:
        return {
            "TableName": table_name,
            "Error": {"Code": "DuplicateItem", "Message": "Duplicate primary key exists in table"},
        }
    try:
        table.put_item(item)
    except DynamodbException as exc:  # item too large, wrong key type, empty key...: this statement only
        return {"TableName": table_name, "Error": {"Code": "ValidationError", "Message": exc.message}}
    return {"TableName": table_name}
