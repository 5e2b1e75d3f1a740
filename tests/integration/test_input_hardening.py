"""Issue 18: every input gets a clear 4xx naming its parameter (or the right 2xx), never a 500.

Requests go through the real handlers (API Gateway proxy events) against moto, so the
body, query and path decoding of `metering.api` is part of what is tested. Each test names
the input class it covers.
"""

import base64
import json
from urllib.parse import quote

import pytest
from botocore.exceptions import ClientError

from metering import authorize, meters
from metering.accounts import Principal, create_key

NAME = "tokens"
WIDE = "\U0001d518"  # 4 bytes in UTF-8, 12 characters once percent-encoded


def proxy(method, resource, path, who, query=None, body=None, headers=None, raw=None, path_params=None):
    """An API Gateway proxy event as the authorizer lets it through for `who`."""
    multi = {name: values if isinstance(values, list) else [values] for name, values in (query or {}).items()}
    headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    if isinstance(body, dict):
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    b64 = raw is not None
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {k: v[-1] for k, v in multi.items()} or None,
        "multiValueQueryStringParameters": multi or None,
        "pathParameters": path_params,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": "/local" + path,
            "stage": "local",
            "requestId": "test",
            "authorizer": {"account_id": who.account_id, "livemode": "false"} if who else None,
        },
        "body": base64.b64encode(raw).decode() if b64 else body,
        "isBase64Encoded": b64,
    }


class KeyLimits:
    """The DynamoDB client with DynamoDB's key size limits, which moto does not check: a
    partition key over 2,048 bytes or a sort key over 1,024 is a ValidationException."""

    def __init__(self, real):
        self.real = real

    @staticmethod
    def _check(values: dict, operation: str) -> None:
        for name, limit in (("pk", 2048), ("sk", 1024), (":pk", 2048), (":lo", 1024), (":hi", 1024)):
            value = (values or {}).get(name, {}).get("S")
            if value is not None and len(value.encode("utf-8", "surrogatepass")) > limit:
                error = {"Code": "ValidationException", "Message": f"{name} exceeds {limit} bytes"}
                raise ClientError({"Error": error}, operation)

    def __getattr__(self, name):
        attr = getattr(self.real, name)

        def call(**kwargs):
            self._check(kwargs.get("Key") or kwargs.get("Item"), name)
            self._check(kwargs.get("ExpressionAttributeValues"), name)
            return attr(**kwargs)

        return call if name in ("get_item", "put_item", "update_item", "delete_item", "query") else attr


@pytest.fixture(autouse=True)
def key_limits(monkeypatch):
    from metering import aws

    real = aws.dynamodb

    def factory():
        return KeyLimits(real())

    factory.cache_clear = real.cache_clear
    monkeypatch.setattr(aws, "dynamodb", factory)


@pytest.fixture
def who(account):
    return Principal(account[1], False)


@pytest.fixture
def meter(who):
    params = {"display_name": "Tokens", "event_name": NAME, "default_aggregation": {"formula": "sum"}}
    return meters.create(who, params)


@pytest.fixture
def call(handler, who):
    """(status, body) of a request to one of the template's functions."""

    def send(function, method, resource, path=None, **kwargs):
        out = handler(function, proxy(method, resource, path or resource, kwargs.pop("as_", who), **kwargs))
        assert "Request-Id" in (out.get("headers") or {}) or "Request-Id" in (
            out.get("multiValueHeaders") or {}
        )
        return out["statusCode"], json.loads(out["body"])

    return send


def refused(answer, param, status=400, code=None):
    got, body = answer
    assert got == status, body
    assert body["error"]["param"] == param, body
    if code:
        assert body["error"].get("code") == code, body
    return body["error"]


# Class: deeply nested JSON bodies (a decoder's recursion limit, or just deeper than 32 levels).


@pytest.mark.parametrize("levels", [40, 100_000])
def test_deeply_nested_json_bodies_are_400_naming_the_body(call, meter, levels):
    nested = "[" * levels + "]" * levels
    for function, resource in (
        ("MetersFunction", "/v1/billing/meters"),
        ("IngestFunction", "/v2/billing/meter_events"),
        ("IngestFunction", "/v2/billing/meter_event_stream"),
    ):
        event_body = '{"event_name": "tokens", "payload": ' + nested + "}"
        answer = call(
            function, "POST", resource, body=event_body, headers={"Content-Type": "application/json"}
        )
        error = refused(answer, "body", code="invalid_json")
        assert "nested" in error["message"]


# Class: arrays or objects where a query parameter is a scalar (and the other way round).


@pytest.mark.parametrize(
    "function, resource, query, param",
    [
        ("CoreEventsFunction", "/v2/core/events", {"limit[a]": "1"}, "limit"),
        ("CoreEventsFunction", "/v2/core/events", {"page[]": "evt_x"}, "page"),
        ("CoreEventsFunction", "/v2/core/events", {"object_id[a]": "mtr_x"}, "object_id"),
        ("CoreEventsFunction", "/v2/core/events", {"created": "2026-01-01T00:00:00Z"}, "created"),
        ("CoreEventsFunction", "/v2/core/events", {"created[gt][x]": "1"}, "created[gt]"),
        ("CoreEventsFunction", "/v2/core/events", {"types": "v1.billing.meter.no_meter_found"}, "types"),
        ("MetersFunction", "/v1/billing/meters", {"limit[a]": "1"}, "limit"),
        ("MetersFunction", "/v1/billing/meters", {"starting_after[]": "mtr_x"}, "starting_after"),
        ("MetersFunction", "/v1/billing/meters", {"status[a]": "active"}, "status"),
    ],
)
def test_arrays_and_objects_for_scalar_query_params_name_the_param(call, function, resource, query, param):
    refused(call(function, "GET", resource, query=query), param)


def test_summary_query_params_of_the_wrong_shape_name_the_param(call, meter):
    resource, path = (
        "/v1/billing/meters/{meter_id}/event_summaries",
        f"/v1/billing/meters/{meter['id']}/event_summaries",
    )
    base = {"customer": "c", "start_time": "0", "end_time": "60"}
    for query, param in (
        ({**base, "start_time[a]": "1", "start_time": []}, "start_time"),
        ({**base, "customer[]": "c", "customer": []}, "customer"),
        ({**base, "limit[x]": "2"}, "limit"),
    ):
        query = {k: v for k, v in query.items() if v != []}
        answer = call(
            "SummariesFunction", "GET", resource, path, query=query, path_params={"meter_id": meter["id"]}
        )
        refused(answer, param)


# Class: Python-only number syntax where the API parses integers or decimals.

PYTHON_ONLY = ["1_000", "\u0661\u0662", "5\n", " 5", "+5", "5.0", "0x10"]


@pytest.mark.parametrize("text", PYTHON_ONLY)
def test_python_only_integers_are_refused(call, meter, text):
    code = "parameter_invalid_integer"
    refused(call("MetersFunction", "GET", "/v1/billing/meters", query={"limit": text}), "limit", code=code)
    refused(call("CoreEventsFunction", "GET", "/v2/core/events", query={"limit": text}), "limit", code=code)
    path = f"/v1/billing/meters/{meter['id']}/event_summaries"
    query = {"customer": "c", "start_time": text, "end_time": "60"}
    answer = call(
        "SummariesFunction",
        "GET",
        "/v1/billing/meters/{meter_id}/event_summaries",
        path,
        query=query,
        path_params={"meter_id": meter["id"]},
    )
    refused(answer, "start_time", code=code)
    form = f"event_name={NAME}&payload[stripe_customer_id]=c&payload[value]=1&timestamp={quote(text)}"
    refused(call("IngestFunction", "POST", "/v1/billing/meter_events", body=form), "timestamp", code=code)


@pytest.mark.parametrize("text", ["1_000", "\u0661\u0662", "5\n", " 5", "1e3", "NaN"])
def test_python_only_decimals_are_refused_as_values(call, meter, text):
    form = f"event_name={NAME}&payload[stripe_customer_id]=c&payload[value]={quote(text)}"
    answer = call("IngestFunction", "POST", "/v1/billing/meter_events", body=form)
    refused(answer, "payload[value]", code="meter_event_invalid_value")


@pytest.mark.parametrize(
    "stamp",
    ["\u0662\u0660\u0662\u0666-11-24T10:00:00Z", "2026-W47-2T10:00:00Z", "2026-11-24", "20261124T100000Z"],
)
def test_v2_timestamps_are_rfc3339_with_ascii_digits(call, meter, stamp):
    body = {"event_name": NAME, "payload": {"stripe_customer_id": "c", "value": "1"}, "timestamp": stamp}
    refused(call("IngestFunction", "POST", "/v2/billing/meter_events", body=body), "timestamp")


# Class: payloads larger than a stored item can hold, and bodies over the 1 MB cap.


def test_the_largest_payload_the_limits_allow_is_stored_and_replayed(call, meter):
    payload = {f"{WIDE * 97}{i:03d}": WIDE * 500 for i in range(48)}
    payload |= {"stripe_customer_id": WIDE * 100, "value": "1"}
    form = f"event_name={NAME}&" + "&".join(f"payload[{quote(k)}]={quote(v)}" for k, v in payload.items())
    assert len(form.encode()) < 1024 * 1024
    headers = {"Idempotency-Key": "big-1"}
    first = call("IngestFunction", "POST", "/v1/billing/meter_events", body=form, headers=headers)
    again = call("IngestFunction", "POST", "/v1/billing/meter_events", body=form, headers=headers)
    assert first[0] == again[0] == 200 and first[1] == again[1]
    assert first[1]["payload"] == payload


def test_payloads_over_the_limits_name_the_param(call, meter):
    many = "&".join(f"payload[k{i}]=v" for i in range(51))
    refused(
        call("IngestFunction", "POST", "/v1/billing/meter_events", body=f"event_name={NAME}&{many}"),
        "payload",
    )
    long_value = f"event_name={NAME}&payload[stripe_customer_id]=c&payload[value]=1&payload[note]={'x' * 501}"
    refused(call("IngestFunction", "POST", "/v1/billing/meter_events", body=long_value), "payload[note]")
    huge = {"event_name": NAME, "payload": {"stripe_customer_id": "c", "value": "1", "pad": "y" * (1 << 20)}}
    refused(
        call("IngestFunction", "POST", "/v2/billing/meter_events", body=huge),
        "body",
        code="request_too_large",
    )


def test_stream_error_reports_stay_storable_whatever_the_events_echo(call, handler, who, meter):
    session = handler(
        "IngestFunction",
        proxy("POST", "/v2/billing/meter_event_session", "/v2/billing/meter_event_session", who),
    )
    token = json.loads(session["body"])["authentication_token"]
    long = "z" * 200_000
    events = [
        {"event_name": NAME, "identifier": long, "payload": {"stripe_customer_id": "c", "value": "1"}},
        {"event_name": NAME, long: "x", "payload": {"stripe_customer_id": "c", "value": "1"}},
        {"event_name": NAME, "timestamp": long, "payload": {"stripe_customer_id": "c", "value": "1"}},
        {"event_name": long, "payload": {"stripe_customer_id": "c", "value": "1"}},
        {"event_name": NAME, "identifier": "ok-1", "payload": {"stripe_customer_id": "c", "value": "2"}},
    ]
    event = proxy(
        "POST",
        "/v2/billing/meter_event_stream",
        "/v2/billing/meter_event_stream",
        None,
        body={"events": events},
        headers={"Authorization": f"Bearer {token}"},
    )
    out = handler("IngestFunction", event)
    assert out["statusCode"] == 200, out["body"]
    status, listed = call("CoreEventsFunction", "GET", "/v2/core/events")
    reports = [e for e in listed["data"] if e["type"].startswith("v1.billing.meter.")]
    assert sum(r["data"]["reason"]["error_count"] for r in reports) == 4
    samples = [s for r in reports for t in r["data"]["reason"]["error_types"] for s in t["sample_errors"]]
    assert all(len(s["error_message"]) <= 500 for s in samples)
    assert all(s["request"]["identifier"] is None or len(s["request"]["identifier"]) <= 100 for s in samples)


# Class: invalid UTF-8 in a body is refused, never replaced.


@pytest.mark.parametrize(
    "function, resource, raw",
    [
        (
            "MetersFunction",
            "/v1/billing/meters",
            b"display_name=\xff\xfe&event_name=x&default_aggregation[formula]=sum",
        ),
        ("IngestFunction", "/v2/billing/meter_events", b'{"event_name": "tokens\xc3", "payload": {}}'),
    ],
)
def test_invalid_utf8_bodies_are_refused(call, function, resource, raw, meter):
    headers = {"Content-Type": "application/json"} if raw.startswith(b"{") else {}
    refused(call(function, "POST", resource, raw=raw, headers=headers), "body", code="invalid_utf8")
    percent = "display_name=%ff&event_name=x&default_aggregation[formula]=sum"
    refused(call("MetersFunction", "POST", "/v1/billing/meters", body=percent), "body")


# Class: display_name is printable, like event_name.


@pytest.mark.parametrize("name", ["a\x00b", "line\nbreak", "\u202e", "tab\t"])
def test_display_name_must_be_printable(call, meter, name):
    form = f"display_name={quote(name)}&event_name=other&default_aggregation[formula]=sum"
    refused(call("MetersFunction", "POST", "/v1/billing/meters", body=form), "display_name")
    path = f"/v1/billing/meters/{meter['id']}"
    answer = call(
        "MetersFunction",
        "POST",
        "/v1/billing/meters/{meter_id}",
        path,
        body=f"display_name={quote(name)}",
        path_params={"meter_id": meter["id"]},
    )
    refused(answer, "display_name")


# Class: cursors naming an unknown object or another account's answer resource_missing.


def test_cursors_naming_unknown_or_foreign_objects_are_404_naming_the_param(call, who, meter):
    _, other_account = create_key(secret="sk_test_other_hardening")
    other = meters.create(
        Principal(other_account, False),
        {"display_name": "Theirs", "event_name": NAME, "default_aggregation": {"formula": "sum"}},
    )
    for param, cursor in (
        ("starting_after", other["id"]),
        ("ending_before", other["id"]),
        ("starting_after", "mtr_" + "0" * 24),
        ("ending_before", "not-a-meter"),
        ("starting_after", "m" * 4000),
    ):
        answer = call("MetersFunction", "GET", "/v1/billing/meters", query={param: cursor})
        refused(answer, param, status=404, code="resource_missing")
    ok = call("MetersFunction", "GET", "/v1/billing/meters", query={"ending_before": meter["id"]})
    assert ok[0] == 200 and ok[1]["data"] == []
    foreign = call("CoreEventsFunction", "GET", "/v2/core/events", query={"page": "evt_" + "f" * 24})
    refused(foreign, "page", status=404)


# Class: path ids of any length answer 404, never a storage error.


def test_ids_of_any_length_in_paths_are_404(call, meter):
    for meter_id in ("x" * 8000, WIDE * 2000, "mtr_%23"):
        path = f"/v1/billing/meters/{meter_id}"
        for method, resource, extra in (
            ("GET", "/v1/billing/meters/{meter_id}", {}),
            ("POST", "/v1/billing/meters/{meter_id}", {"body": "display_name=x"}),
            ("POST", "/v1/billing/meters/{meter_id}/deactivate", {}),
        ):
            suffix = "/deactivate" if resource.endswith("deactivate") else ""
            answer = call(
                "MetersFunction", method, resource, path + suffix, path_params={"meter_id": meter_id}, **extra
            )
            assert answer[0] == 404 and answer[1]["error"]["code"] == "resource_missing"
    event_path = "/v2/core/events/" + "e" * 8000
    answer = call(
        "CoreEventsFunction",
        "GET",
        "/v2/core/events/{event_id}",
        event_path,
        path_params={"event_id": "e" * 8000},
    )
    assert answer[0] == 404


# Class: HTTP Basic authentication with the secret key as user name.


@pytest.mark.parametrize("credentials", ["sk_test_integration:", "sk_test_integration:ignored"])
def test_basic_auth_with_the_key_as_user_name_is_accepted(account, credentials):
    header = "Basic " + base64.b64encode(credentials.encode()).decode()
    policy = authorize.policy_for(
        {"headers": {"authorization": header}, "methodArn": "arn:x:y:z:0:api/stage/GET/v1"}
    )
    assert policy["context"] == {"account_id": account[1], "livemode": "false"}
    assert policy["policyDocument"]["Statement"][0]["Effect"] == "Allow"


@pytest.mark.parametrize(
    "header",
    [
        "Basic " + base64.b64encode(b"sk_test_unknown:").decode(),
        "Basic " + base64.b64encode(b":sk_test_integration").decode(),
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"\xff\xfe:").decode(),
        "Digest sk_test_integration",
    ],
)
def test_basic_auth_with_a_wrong_or_malformed_key_is_denied(account, header):
    with pytest.raises(authorize.Unauthorized):
        authorize.policy_for({"headers": {"Authorization": header}})


def test_the_stream_takes_session_tokens_as_bearer_only(handler, who, meter):
    session = handler(
        "IngestFunction",
        proxy("POST", "/v2/billing/meter_event_session", "/v2/billing/meter_event_session", who),
    )
    token = json.loads(session["body"])["authentication_token"]
    basic = "Basic " + base64.b64encode(f"{token}:".encode()).decode()
    event = proxy(
        "POST",
        "/v2/billing/meter_event_stream",
        "/v2/billing/meter_event_stream",
        None,
        body={"events": [{"event_name": NAME, "payload": {"stripe_customer_id": "c", "value": "1"}}]},
        headers={"Authorization": basic},
    )
    out = handler("IngestFunction", event)
    assert out["statusCode"] == 401 and json.loads(out["body"])["error"]["code"] == "invalid_api_key"
    # the same token as Bearer is accepted
    event["headers"]["Authorization"] = f"Bearer {token}"
    assert handler("IngestFunction", event)["statusCode"] == 200
