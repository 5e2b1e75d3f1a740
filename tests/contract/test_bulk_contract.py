"""Bulk upload through `metering-local serve`: boto3 puts a file, the result and the usage appear."""

import json
import time
from decimal import Decimal

import pytest
import requests

from tests.contract.conftest import KEYS
from tests.contract.test_usage_contract import BASE, DAY, new_meter, settled, total


@pytest.fixture
def client(runner):
    return runner.client(KEYS[0])


def wait_for_object(s3, key: str, timeout: float = 20.0) -> dict:
    deadline = time.time() + timeout
    while True:
        try:
            return json.loads(s3.get_object(Bucket="metering-uploads", Key=key)["Body"].read())
        except s3.exceptions.NoSuchKey:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_upload_with_boto3_then_read_results_and_summaries(runner, client):
    account_id = requests.get(
        f"{runner.api_url}/v1/account", headers={"Authorization": f"Bearer {KEYS[0]}"}
    ).json()["id"]
    meter = new_meter(client)
    rows = ["identifier,timestamp,event_name,payload_stripe_customer_id,payload_value"]
    rows += [f"b{i}-{meter.id},{BASE + i * 60},{meter.event_name},cus_1,1.5" for i in range(40)]
    rows.append(f"bad-{meter.id},{BASE},{meter.event_name},cus_1,not-a-number")
    s3 = runner.boto("s3")
    s3.put_object(
        Bucket="metering-uploads", Key=f"uploads/{account_id}/usage.csv", Body="\n".join(rows).encode()
    )
    result = wait_for_object(s3, f"results/{account_id}/usage.csv.result.json")
    assert (result["status"], result["records"], result["ingested"], result["errors"]) == (
        "succeeded_with_errors",
        41,
        40,
        1,
    )
    errors = s3.get_object(Bucket="metering-uploads", Key=result["errors_file"])["Body"].read().decode()
    assert "meter_event_invalid_value" in errors and "41" in errors
    assert settled(lambda: total(client, meter, end=BASE + DAY), Decimal(60)) == Decimal(60)
