"""Make moto's DynamoDB writes atomic with respect to each other.

Real DynamoDB applies each conditional write and each transaction atomically. moto's
backend mutates plain Python dicts and is not thread-safe (a transaction deep-copies
tables while another thread writes), so the runner and the tests, which drive it from
many threads like concurrent Lambdas, serialise its operations with one lock.

moto also backs up every table a transaction touches with a deep copy, which makes each
transaction cost O(table size). The backup here copies the table's item index shallowly
and deep-copies only the items the transaction updates in place (puts replace items, so
the old objects stay intact): a rollback restores exactly the same state, stream
records included, in time proportional to the index instead of the data. And a Query on
a table's key reads only its partition, as DynamoDB does, instead of sorting the table.
"""

import copy
import functools
import threading
from collections import defaultdict

_lock = threading.RLock()
_OPERATIONS = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
    "get_item",
    "query",
    "scan",
    "transact_get_items",
    "batch_get_item",
)


def install() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    __import__("metering_local.moto_partiql", fromlist=["install"]).install()  # DuplicateItem (that file)
    if getattr(DynamoDBBackend, "_metering_atomic", False):
        return
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def locked(self, *args, __original=original, __name=name, **kwargs):
            with _lock:
                if __name == "transact_write_items":
                    _note_updates(kwargs.get("transact_items") or args[0])
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)
    import moto.dynamodb.models as backend_module

    backend_module.copy = _CheapBackup(backend_module.copy)
    _partition_queries()
    DynamoDBBackend._metering_atomic = True


def _partition_queries() -> None:
    """A Query on the table's own key reads its partition, not a sorted copy of the table.

    moto answers every Query by sorting all the table's items and filtering them, so a
    query costs O(table) and a local run slows down as its tables grow (a period close of
    10,000 subscriptions became quadratic). DynamoDB reads only the partition; so does
    this, under the backend lock held by `install`'s wrappers, and a BETWEEN on a string sort
    key hands moto only the items in that range. Index queries are unchanged."""
    from moto.dynamodb.models.table import Table

    original = Table.query

    @functools.wraps(original)
    def query(self, hash_key, *args, **kwargs):
        index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
        if index_name is not None or hash_key is None or not self.range_key_attr:
            return original(self, hash_key, *args, **kwargs)
        partition = list(self.items[hash_key].values()) if hash_key in self.items else []
        comparison = kwargs.get("range_comparison", args[0] if args else None)
        bounds = kwargs.get("range_objs", args[1] if len(args) > 1 else None)
        if comparison == "BETWEEN" and bounds and all(b.type == "S" for b in bounds):
            # a key range, as DynamoDB reads it: only those items are sorted and filtered
            low, high = bounds[0].value, bounds[1].value
            partition = [i for i in partition if low <= i.range_key.value <= high]
        self.all_items = lambda: partition
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    Table.query = query


class _CheapBackup:
    """Stands in for the `copy` module inside moto's DynamoDB backend."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def deepcopy(self, obj, memo=None):
        from moto.dynamodb.models.table import Table

        if type(obj) is Table:
            if id(obj) not in _backups:
                _backups[id(obj)] = _backup(obj)
            return _backups[id(obj)]
        return self._real.deepcopy(obj, memo)


_updating: list[tuple[str, dict]] = []  # (table, key) of each Update in the running transaction


_backups: dict[int, object] = {}  # moto backs a table up once per transaction item: copy it once


def _note_updates(transact_items: list[dict]) -> None:
    _backups.clear()
    _updating[:] = [
        (op["TableName"], op["Key"]) for entry in transact_items for t, op in entry.items() if t == "Update"
    ]


def _backup(table):
    from moto.dynamodb.models.dynamo_type import DynamoType

    snapshot = copy.copy(table)
    if table.has_range_key:
        snapshot.items = defaultdict(dict, {h: dict(rows) for h, rows in table.items.items()})
    else:
        snapshot.items = defaultdict(dict, table.items)
    for name, key in _updating:
        if name != table.name:
            continue
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.has_range_key else None
        item = table.get_item(hash_key, range_key)
        if item is not None and range_key is not None:
            snapshot.items[hash_key][range_key] = copy.deepcopy(item)
        elif item is not None:
            snapshot.items[hash_key] = copy.deepcopy(item)
    if table.stream_shard is not None:
        shard = copy.copy(table.stream_shard)
        shard.items = list(table.stream_shard.items)
        snapshot.stream_shard = shard
    return snapshot
