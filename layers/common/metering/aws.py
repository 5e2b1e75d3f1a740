"""boto3 clients, created once per process and only when first used.

The endpoint comes from boto3's own AWS_ENDPOINT_URL setting, which the local runner
points at its embedded moto server.
"""

from functools import cache


@cache
def dynamodb():
    import boto3
    from botocore.config import Config

    # Wide pool: the stream and bulk paths write concurrently from threads.
    return boto3.client("dynamodb", config=Config(max_pool_connections=64, retries={"mode": "standard"}))


@cache
def events():
    import boto3

    return boto3.client("events")


@cache
def s3():
    import boto3

    return boto3.client("s3")


@cache
def lambda_():
    import boto3

    return boto3.client("lambda")


@cache
def sqs():
    import boto3

    return boto3.client("sqs")


def reset() -> None:
    """Forget cached clients (tests switch endpoints between sessions)."""
    for factory in (dynamodb, events, s3, lambda_, sqs):
        factory.cache_clear()
