"""The aggregate and summaries handlers invoked with the events/ files against moto."""

import json
from decimal import Decimal

from metering import meters
from metering.accounts import Principal
from tests.conftest import sample_event

WHO = Principal("acct_sample", False)


def test_stream_sample_then_summary_sample(aws, handler, monkeypatch):
    meter = meters.create(
        WHO,
        {"display_name": "AI tokens", "event_name": "ai_tokens", "default_aggregation": {"formula": "sum"}},
    )
    stream = json.loads(json.dumps(sample_event("aggregate_stream.json")).replace("mtr_sample", meter["id"]))
    assert handler("AggregateFunction", stream) == {"batchItemFailures": [], "state": {}}
    assert handler("AggregateFunction", stream) == {"batchItemFailures": [], "state": {}}  # redelivered
    summary = sample_event("list_event_summaries.json")
    path = summary["path"].replace("mtr_sample", meter["id"])
    summary["path"] = summary["requestContext"]["path"] = path
    summary["pathParameters"] = {"meter_id": meter["id"]}
    result = handler("SummariesFunction", summary)
    assert result["statusCode"] == 200, result["body"]
    listing = json.loads(result["body"], parse_float=Decimal)
    assert [(s["start_time"], s["aggregated_value"]) for s in listing["data"]] == [(1795543200, 25)]


def test_summary_sample_for_an_unknown_meter_is_404(aws, handler):
    result = handler("SummariesFunction", sample_event("list_event_summaries.json"))
    assert result["statusCode"] == 404
    assert json.loads(result["body"])["error"]["type"] == "invalid_request_error"
