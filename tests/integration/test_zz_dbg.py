import boto3
from metering import alerts, ingest, meters, snapshot_events, meter_lookup
from metering.accounts import Principal
from tests.integration.test_aggregate import BASE
from tests.streams import stream_pump

def test_dbg(aws):
    who = Principal("acct_dbg1", False)
    m = meters.create(who, {"display_name": "m", "event_name": "e0", "default_aggregation": {"formula": "sum"}})
    a = alerts.create(who, {"alert_type": "usage_threshold", "title": "t", "usage_threshold": {"gte": "1", "meter": m["id"], "recurrence": "one_time"}})
    print("lookup", meter_lookup.by_event_name(who.scope, "e0"))
    ingest.create_v1(who, {"event_name": "e0", "timestamp": str(BASE + 10), "identifier": "id1", "payload": {"stripe_customer_id": "cus_a", "value": "5"}})
    item = boto3.client("dynamodb").get_item(TableName=aws.tables["EventsTable"], Key={"pk": {"S": f"A#{who.scope}#ID#id1"}, "sk": {"S": "EV"}})["Item"]
    print("item al", item.get("al"), item["seq"])
    print("alert", alerts.find(who.scope, a["id"]))
    stream_pump(aws).settle()
    print(snapshot_events.page(who.scope, 10))
