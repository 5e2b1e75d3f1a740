"""The AWS side of the local runtime: an embedded moto server (or another endpoint) with
the tables, bucket and event bus of template.yaml."""

import os
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

from metering_local.template import Template

REGION = "us-east-1"


@dataclass
class Names:
    """Physical names of the template's resources in the local endpoint."""

    tables: dict[str, str]
    bucket: str | None
    buses: dict[str, str]
    queues: dict[str, str] = field(default_factory=dict)  # logical id -> queue URL (what Ref gives)

    def resolve(self, value, parameters: dict):
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            return (
                self.tables.get(ref)
                or self.buses.get(ref)
                or self.queues.get(ref)
                or parameters.get(ref)
                or (self.bucket if ref.endswith("Bucket") else ref)
            )
        return value


def start_moto(host: str, port: int):
    import logging

    from moto.server import ThreadedMotoServer

    from metering_local import moto_atomic

    moto_atomic.install()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    return server


def use_endpoint(url: str) -> None:
    """Point boto3 (ours and the handlers') at the endpoint, with dummy credentials if none."""
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    os.environ.setdefault("AWS_REGION", os.environ["AWS_DEFAULT_REGION"])


def create_table(client, name: str, props: dict) -> None:
    kwargs = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if "StreamSpecification" in props:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    try:
        client.create_table(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)


def provision(template: Template, bucket: str | None, prefix: str = "") -> Names:
    """Create every table, the upload bucket and the buses; idempotent."""
    names = Names(
        {logical: prefix + logical for logical in template.tables()},
        bucket if template.buckets() or bucket else None,
        {logical: prefix + logical for logical in template.buses()},
    )
    dynamodb = boto3.client("dynamodb")
    for logical, props in template.tables().items():
        create_table(dynamodb, names.tables[logical], props)
    if names.bucket:
        s3 = boto3.client("s3")
        try:
            s3.create_bucket(Bucket=names.bucket)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    events = boto3.client("events")
    for name in names.buses.values():
        try:
            events.create_event_bus(Name=name)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceAlreadyExistsException":
                raise
    sqs = boto3.client("sqs")
    for logical in template.of_type("AWS::SQS::Queue"):
        names.queues[logical] = sqs.create_queue(QueueName=prefix + logical)["QueueUrl"]
    return names


def function_environment(template: Template, names: Names) -> dict[str, str]:
    """The union of every function's environment, with references resolved."""
    parameters = {name: str(p.get("Default", "")) for name, p in template.parameters.items()}
    env: dict[str, str] = {}
    for fn in template.functions().values():
        for key, value in fn.environment.items():
            env[key] = str(names.resolve(value, parameters))
    return env
