"""boto3 clients, created once per process and only when first used.

The endpoint comes from boto3's own AWS_ENDPOINT_URL setting, which the local runner
points at its embedded moto server.
"""

from functools import cache


@cache
def dynamodb():
    import boto3

    return boto3.client("dynamodb")


@cache
def events():
    import boto3

    return boto3.client("events")


@cache
def s3():
    import boto3

    return boto3.client("s3")


def reset() -> None:
    """Forget cached clients (tests switch endpoints between sessions)."""
    for factory in (dynamodb, events, s3):
        factory.cache_clear()
