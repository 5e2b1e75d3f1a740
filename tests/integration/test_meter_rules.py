"""Meter rules against moto through the layer: uniqueness, validation writes nothing, tenancy."""

import boto3
import pytest

from metering import meters
from metering.accounts import Principal
from metering.errors import StripeError

A = Principal("acct_a", False)
B = Principal("acct_b", False)
SPEC = {"display_name": "Tokens", "event_name": "tokens", "default_aggregation": {"formula": "sum"}}


def item_count(aws) -> int:
    return boto3.client("dynamodb").scan(TableName=aws.tables["MainTable"], Select="COUNT")["Count"]


def test_event_name_is_unique_per_account_inactive_included(aws):
    meter = meters.create(A, SPEC)
    meters.set_status(A, meter["id"], {}, active=False)
    with pytest.raises(StripeError) as err:
        meters.create(A, {**SPEC, "display_name": "Other"})
    assert err.value.param == "event_name" and err.value.status == 400
    assert meters.create(B, SPEC)["event_name"] == "tokens"  # another account may use it


@pytest.mark.parametrize(
    "params, param, code",
    [
        ({k: v for k, v in SPEC.items() if k != "event_name"}, "event_name", "parameter_missing"),
        ({**SPEC, "default_aggregation": {"formula": "avg"}}, "default_aggregation[formula]", None),
        ({**SPEC, "display_name": "x" * 251}, "display_name", "string_length_exceeds_maximum"),
        ({**SPEC, "event_name": "e" * 101}, "event_name", "string_length_exceeds_maximum"),
        (
            {**SPEC, "customer_mapping": {"event_payload_key": "k" * 101}},
            "customer_mapping[event_payload_key]",
            None,
        ),
        ({**SPEC, "colour": "red"}, "colour", "parameter_unknown"),
        (
            {**SPEC, "default_aggregation": {"formula": "sum", "x": "1"}},
            "default_aggregation[x]",
            "parameter_unknown",
        ),
        ({**SPEC, "event_time_window": "week"}, "event_time_window", None),
        ({**SPEC, "event_name": "bad\nname"}, "event_name", None),
    ],
)
def test_bad_create_names_the_param_and_writes_nothing(aws, params, param, code):
    before = item_count(aws)
    with pytest.raises(StripeError) as err:
        meters.create(A, params)
    assert err.value.param == param
    if code:
        assert err.value.code == code
    assert item_count(aws) == before


def test_only_display_name_can_change(aws):
    meter = meters.create(A, SPEC)
    with pytest.raises(StripeError) as err:
        meters.update(A, meter["id"], {"event_name": "other"})
    assert err.value.code == "parameter_unknown" and err.value.param == "event_name"


def test_other_accounts_meters_are_404(aws):
    meter = meters.create(A, SPEC)
    for call in (
        lambda: meters.retrieve(B, meter["id"], {}),
        lambda: meters.update(B, meter["id"], {"display_name": "stolen"}),
        lambda: meters.set_status(B, meter["id"], {}, active=False),
    ):
        with pytest.raises(StripeError) as err:
            call()
        assert err.value.status == 404
    assert meters.retrieve(A, meter["id"], {})["display_name"] == "Tokens"
    assert meters.list_meters(B, {})["data"] == []


def test_special_characters_in_event_names_do_not_collide(aws):
    names = ["a#b", "a", "a/b", "a%23b", "ünï cödé:1", "a#"]
    for name in names:
        meters.create(A, {**SPEC, "event_name": name})
    assert sorted(m["event_name"] for m in meters.list_meters(A, {"limit": "100"})["data"]) == sorted(names)


def test_list_is_newest_first_with_cursors(aws):
    ids = [meters.create(A, {**SPEC, "event_name": f"e{i}"})["id"] for i in range(7)]
    newest_first = ids[::-1]
    page = meters.list_meters(A, {"limit": "3"})
    assert [m["id"] for m in page["data"]] == newest_first[:3] and page["has_more"]
    page = meters.list_meters(A, {"limit": "3", "starting_after": newest_first[2]})
    assert [m["id"] for m in page["data"]] == newest_first[3:6] and page["has_more"]
    page = meters.list_meters(A, {"limit": "3", "starting_after": newest_first[5]})
    assert [m["id"] for m in page["data"]] == newest_first[6:] and not page["has_more"]
    page = meters.list_meters(A, {"limit": "2", "ending_before": newest_first[3]})
    assert [m["id"] for m in page["data"]] == newest_first[1:3] and page["has_more"]
    with pytest.raises(StripeError) as err:
        meters.list_meters(A, {"starting_after": ids[0], "ending_before": ids[1]})
    assert err.value.code == "parameters_exclusive"
    with pytest.raises(StripeError) as err:
        meters.list_meters(A, {"limit": "101"})
    assert err.value.param == "limit"
