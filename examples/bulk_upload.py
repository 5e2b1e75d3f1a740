"""Upload a CSV of meter events to the bulk bucket with boto3 and print its result file.

    # local (`make serve`): the embedded AWS endpoint and the default bucket
    AWS_ENDPOINT_URL=http://127.0.0.1:4566 python examples/bulk_upload.py usage.csv
    # deployed: your AWS credentials, the stack's UploadBucketName output
    METERING_API_URL=https://... METERING_API_KEY=sk_test_... \
    METERING_BUCKET=metering-uploads-123456789012 python examples/bulk_upload.py usage.csv

The CSV has Stripe's columns, one `payload_<key>` column per payload key:

    identifier,timestamp,event_name,payload_stripe_customer_id,payload_value
    req_001,1795478400,api_requests,cus_123,12

The file goes to `uploads/<account id>/<mode>/<name>` (`test` for an sk_test_ key, `live`
for an sk_live_ key: the events count in that mode); when it is done,
`results/<account id>/<mode>/<name>.result.json` says how many rows counted, and rejected
rows are in `results/<account id>/<mode>/<name>.errors.csv`. Needs `pip install stripe boto3`.
"""

import argparse
import json
import os
import time
from pathlib import Path

import boto3
import stripe

API_URL = os.environ.get("METERING_API_URL", "http://127.0.0.1:3000")
API_KEY = os.environ.get("METERING_API_KEY", "sk_test_local")
BUCKET = os.environ.get("METERING_BUCKET", "metering-uploads")

if os.environ.get("AWS_ENDPOINT_URL"):
    # the local endpoint accepts any credentials
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("csv", type=Path)
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for the result")
    args = parser.parse_args()

    # The account id names the upload prefix (in a deployment, IAM limits you to yours).
    account_id = (
        stripe.StripeClient(API_KEY, base_addresses={"api": API_URL}).v1.accounts.retrieve_current().id
    )
    mode = "live" if API_KEY.startswith("sk_live_") else "test"
    s3 = boto3.client("s3")  # honours AWS_ENDPOINT_URL
    upload_key = f"uploads/{account_id}/{mode}/{args.csv.name}"
    s3.upload_file(str(args.csv), BUCKET, upload_key)
    print(f"uploaded s3://{BUCKET}/{upload_key}")

    result_key = f"results/{account_id}/{mode}/{args.csv.name}.result.json"
    deadline = time.time() + args.timeout
    while True:
        try:
            result = json.loads(s3.get_object(Bucket=BUCKET, Key=result_key)["Body"].read())
            break
        except s3.exceptions.NoSuchKey:
            if time.time() > deadline:
                raise SystemExit(
                    f"no result at s3://{BUCKET}/{result_key} after {args.timeout:.0f} s"
                ) from None
            time.sleep(1)
    print(
        f"status: {result['status']}  records: {result['records']}  "
        f"ingested: {result['ingested']}  errors: {result['errors']}"
    )
    if result["failed_reason"]:
        print(f"failed: {result['failed_reason']}")
    if result["errors_file"]:
        print(s3.get_object(Bucket=BUCKET, Key=result["errors_file"])["Body"].read().decode(), end="")


if __name__ == "__main__":
    main()
