"""The local S3 trigger: objects put by an S3 client become S3 notification events for the function."""

import threading
from urllib.parse import unquote_plus

import boto3

from metering_local.s3_trigger import BucketPoller

BUCKET = "metering-uploads"


def poller(invoke) -> BucketPoller:
    return BucketPoller(BUCKET, "uploads/", invoke, threading.Event(), interval=0)


def test_each_new_object_version_is_notified_once_with_its_key_encoded(aws):
    s3, events = boto3.client("s3"), []
    trigger = poller(events.append)
    s3.put_object(Bucket=BUCKET, Key="uploads/acct_1/my file+1.csv", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key="results/acct_1/x.result.json", Body=b"{}")  # outside the prefix
    trigger.poll()
    trigger.poll()
    ((record,),) = [e["Records"] for e in events]
    assert record["eventName"] == "ObjectCreated:Put" and record["eventSource"] == "aws:s3"
    obj = record["s3"]["object"]
    assert obj["key"] == "uploads/acct_1/my+file%2B1.csv"
    assert unquote_plus(obj["key"]) == "uploads/acct_1/my file+1.csv"
    assert (record["s3"]["bucket"]["name"], obj["size"]) == (BUCKET, 1)
    assert obj["eTag"] == s3.head_object(Bucket=BUCKET, Key="uploads/acct_1/my file+1.csv")["ETag"].strip('"')
    s3.put_object(Bucket=BUCKET, Key="uploads/acct_1/my file+1.csv", Body=b"b")  # replaced: a new ETag
    trigger.poll()
    assert len(events) == 2


def test_failures_are_retried_twice_and_continuations_followed(aws):
    calls = []

    def invoke(event):
        calls.append(event)
        if len(calls) <= 2:
            raise RuntimeError("handler failed")
        if "continuation" not in event:
            return {"continuations": [{"continuation": {"part": 1}}]}
        return {"continuations": []}

    boto3.client("s3").put_object(Bucket=BUCKET, Key="uploads/acct_1/a.csv", Body=b"a")
    poller(invoke).poll()
    assert [("Records" in c, c.get("continuation")) for c in calls] == [
        (True, None),
        (True, None),
        (True, None),
        (False, {"part": 1}),
    ]
