"""Make moto's DynamoDB writes atomic with respect to each other.

Real DynamoDB applies each conditional write and each transaction atomically. moto's
backend mutates plain Python dicts and is not thread-safe (a transaction deep-copies
tables while another thread writes), so the runner and the tests, which drive it from
many threads like concurrent Lambdas, serialise its operations with one lock.
"""

import functools
import threading

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

    if getattr(DynamoDBBackend, "_metering_atomic", False):
        return
    for name in _OPERATIONS:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        @functools.wraps(original)
        def locked(self, *args, __original=original, **kwargs):
            with _lock:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)
    DynamoDBBackend._metering_atomic = True
