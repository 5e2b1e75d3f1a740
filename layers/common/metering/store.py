"""Thin DynamoDB access: item (de)serialisation, conditional writes, paged queries."""

from collections.abc import Callable, Iterator
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from metering import aws
from metering.errors import retryable

_ser = TypeSerializer()
_de = TypeDeserializer()

RETRYABLE = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "TransactionConflictException",
}


def to_item(data: dict) -> dict:
    return {k: _ser.serialize(v) for k, v in data.items() if v is not None}


def from_item(item: dict | None) -> dict | None:
    if item is None:
        return None
    return {k: _de.deserialize(v) for k, v in item.items()}


def values(data: dict) -> dict:
    return {k: _ser.serialize(v) for k, v in data.items()}


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


TRANSIENT_REASONS = {
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
}


def transient(exc: ClientError) -> bool:
    """A fault worth retrying: throttling, or a transaction cancelled by a conflict or
    throttling rather than by one of its conditions."""
    if error_code(exc) in RETRYABLE:
        return True
    reasons = {r.get("Code") for r in exc.response.get("CancellationReasons") or []}
    return error_code(exc) == "TransactionCanceledException" and bool(reasons & TRANSIENT_REASONS)


def raise_retryable(exc: ClientError) -> None:
    """Throttling and transient faults become a 429 with Stripe-Should-Retry: true."""
    if transient(exc):
        raise retryable() from exc


def get(table: str, pk: str, sk: str, consistent: bool = False) -> dict | None:
    try:
        out = aws.dynamodb().get_item(
            TableName=table, Key=to_item({"pk": pk, "sk": sk}), ConsistentRead=consistent
        )
    except ClientError as exc:
        raise_retryable(exc)
        raise
    return from_item(out.get("Item"))


def put_new(table: str, item: dict) -> bool:
    """Put an item unless its key exists; True if written."""
    try:
        aws.dynamodb().put_item(
            TableName=table, Item=to_item(item), ConditionExpression="attribute_not_exists(pk)"
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise_retryable(exc)
        raise
    return True


def query(
    table: str, pk: str, low: str, high: str, forward: bool, consistent: bool = False
) -> Iterator[dict]:
    """Items of one partition with low <= sk <= high, in sort order or reversed."""
    kwargs: dict[str, Any] = dict(
        TableName=table,
        KeyConditionExpression="pk = :pk AND sk BETWEEN :lo AND :hi",
        ExpressionAttributeValues=values({":pk": pk, ":lo": low, ":hi": high}),
        ScanIndexForward=forward,
        ConsistentRead=consistent,
    )
    while True:
        try:
            out = aws.dynamodb().query(**kwargs)
        except ClientError as exc:
            raise_retryable(exc)
            raise
        for item in out.get("Items", []):
            yield from_item(item)
        if "LastEvaluatedKey" not in out:
            return
        kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]


def batch_get(
    table: str, keys: list[tuple[str, str]], consistent: bool = False
) -> dict[tuple[str, str], dict]:
    """The items found for (pk, sk) keys, by key; 100 keys per request, unprocessed keys retried."""
    found: dict[tuple[str, str], dict] = {}
    pending = [to_item({"pk": pk, "sk": sk}) for pk, sk in dict.fromkeys(keys)]
    while pending:
        request: dict | None = {table: {"Keys": pending[:100], "ConsistentRead": consistent}}
        pending = pending[100:]
        while request:
            try:
                out = aws.dynamodb().batch_get_item(RequestItems=request)
            except ClientError as exc:
                raise_retryable(exc)
                raise
            for raw in out.get("Responses", {}).get(table, []):
                item = from_item(raw)
                found[(item["pk"], item["sk"])] = item
            request = out.get("UnprocessedKeys") or None
    return found


HIGH = "\U0010ffff"


def page(
    table: str,
    pk: str,
    prefix: str,
    limit: int,
    starting_after: str | None = None,
    ending_before: str | None = None,
    keep: Callable[[dict], bool] = lambda item: True,
) -> tuple[list[dict], bool]:
    """Newest-first page of items whose sk is prefix + a time-ordered id.

    Returns (items, has_more) following Stripe cursors: starting_after pages towards older
    items, ending_before towards newer ones.
    """
    if ending_before is not None:
        items = query(table, pk, prefix + ending_before + "\x00", prefix + HIGH, forward=True)
    else:
        high = prefix + starting_after if starting_after is not None else prefix + HIGH
        items = query(table, pk, prefix, high, forward=False)
    picked: list[dict] = []
    has_more = False
    for item in items:
        if starting_after is not None and item["sk"] == prefix + starting_after:
            continue
        if not keep(item):
            continue
        if len(picked) == limit:
            has_more = True
            break
        picked.append(item)
    if ending_before is not None:
        picked.reverse()
    return picked, has_more


def transact(operations: list[dict]) -> list[str]:
    """Run a transaction; [] when it committed, else the cancellation reasons' codes (one per
    operation, "None" for those that were not the cause). Throttling becomes a 429."""
    try:
        aws.dynamodb().transact_write_items(TransactItems=operations)
    except ClientError as exc:
        if error_code(exc) != "TransactionCanceledException":
            raise_retryable(exc)
            raise
        return [r.get("Code") or "None" for r in exc.response.get("CancellationReasons") or []]
    return []
