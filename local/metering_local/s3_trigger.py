"""S3 ObjectCreated triggers, driven locally.

Objects put into the upload bucket by any S3 client (aws cli, boto3) on the endpoint are
noticed by polling the bucket, and the function gets the S3 notification event Lambda
would get (key URL-encoded as S3 does). As with S3's asynchronous invocation, a failed
invocation is retried twice. A result with `continuations` (a file too large for one
invocation) is invoked again with each, as the deployed function does by invoking itself.
"""

import datetime
import logging
import threading
from urllib.parse import quote_plus

import boto3

from metering_local import triggers

log = logging.getLogger("metering_local.s3")


def notification(bucket: str, obj: dict, region: str = "us-east-1") -> dict:
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": region,
                "eventTime": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                    "object": {
                        "key": quote_plus(obj["Key"], safe="/"),
                        "size": obj["Size"],
                        "eTag": obj["ETag"].strip('"'),
                    },
                },
            }
        ]
    }


class BucketPoller(threading.Thread):
    def __init__(self, bucket: str, prefix: str, invoke, stop: threading.Event, interval: float = 0.5):
        super().__init__(daemon=True, name=f"s3-{bucket}")
        self.bucket, self.prefix, self.invoke, self.stop, self.interval = (
            bucket,
            prefix,
            invoke,
            stop,
            interval,
        )
        self.seen: set[tuple[str, str]] = set()
        self.s3 = boto3.client("s3")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("bucket poll failed")
            self.stop.wait(self.interval)

    def poll(self) -> None:
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                if (obj["Key"], obj["ETag"]) not in self.seen:
                    self.seen.add((obj["Key"], obj["ETag"]))
                    triggers.deliver(
                        self.invoke, notification(self.bucket, obj, self.s3.meta.region_name), log
                    )


def _prefix(props: dict) -> str:
    for rule in props.get("Filter", {}).get("S3Key", {}).get("Rules", []):
        if rule.get("Name", "").lower() == "prefix":
            return rule["Value"]
    return ""


def start(template, runtime, names, stop: threading.Event) -> list[threading.Thread]:
    """One poller per S3 trigger in the template, on the runner's upload bucket."""
    threads = []
    if not names.bucket:
        return threads
    for logical_id, props in template.triggers("S3"):

        def invoke(event, _fn=logical_id):
            return runtime.invoke(_fn, event)

        poller = BucketPoller(names.bucket, _prefix(props), invoke, stop)
        poller.start()
        threads.append(poller)
    return threads
