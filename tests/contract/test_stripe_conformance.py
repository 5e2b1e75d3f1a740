"""Issue 18: every metering response, errors included, measured against Stripe's own OpenAPI
schemas (tests/contract/stripe_schemas/), plus what every answer of the local runner owes
its caller: a Request-Id, Basic authentication, many simultaneous connections.

Raw HTTP (requests, sockets), so the JSON is checked exactly as it travels.
"""

import base64
import json
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import pytest
import requests

from tests.contract import stripe_schemas
from tests.contract.conftest import KEYS

KEY = KEYS[0]


class Api:
    def __init__(self, runner, key: str = KEY):
        self.base, self.key = runner.api_url, key

    def __call__(self, method, path, *, data=None, json=None, params=None, headers=None, auth=True):
        headers = {**({"Authorization": f"Bearer {self.key}"} if auth else {}), **(headers or {})}
        out = requests.request(
            method, self.base + path, data=data, json=json, params=params, headers=headers, timeout=30
        )
        assert out.headers.get("Request-Id"), f"{method} {path} answered without Request-Id"
        return out


def conforms(response, name: str, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert not stripe_schemas.problems(name, body), (name, stripe_schemas.problems(name, body), body)
    return body


@pytest.fixture(scope="module")
def api(runner):
    return Api(runner)


@pytest.fixture(scope="module")
def meter(api):
    name = f"conf_{uuid.uuid4().hex[:8]}"
    form = {"display_name": "Conformance", "event_name": name, "default_aggregation[formula]": "sum"}
    return conforms(api("POST", "/v1/billing/meters", data=form), "billing.meter")


def test_meter_routes_answer_stripes_billing_meter(api, meter):
    path = f"/v1/billing/meters/{meter['id']}"
    conforms(api("GET", path), "billing.meter")
    conforms(api("POST", path, data={"display_name": "Renamed"}), "billing.meter")
    conforms(api("GET", "/v1/billing/meters", params={"limit": 2}), "GetBillingMeters.200")
    conforms(api("POST", path + "/deactivate"), "billing.meter")
    conforms(api("POST", path + "/reactivate"), "billing.meter")


def test_meter_event_routes_answer_stripes_objects(api, meter):
    name, ident = meter["event_name"], uuid.uuid4().hex
    form = {
        "event_name": name,
        "identifier": ident,
        "payload[stripe_customer_id]": "c",
        "payload[value]": "2",
    }
    conforms(api("POST", "/v1/billing/meter_events", data=form), "billing.meter_event")
    v2 = {"event_name": name, "identifier": ident + "2", "payload": {"stripe_customer_id": "c", "value": "1"}}
    conforms(api("POST", "/v2/billing/meter_events", json=v2), "v2.billing.meter_event")
    cancel = {"event_name": name, "type": "cancel", "cancel[identifier]": ident}
    conforms(
        api("POST", "/v1/billing/meter_event_adjustments", data=cancel), "billing.meter_event_adjustment"
    )
    v2_cancel = {"event_name": name, "type": "cancel", "cancel": {"identifier": ident + "2"}}
    out = api("POST", "/v2/billing/meter_event_adjustments", json=v2_cancel)
    conforms(out, "v2.billing.meter_event_adjustment")
    session = conforms(
        api("POST", "/v2/billing/meter_event_session", json={}), "v2.billing.meter_event_session"
    )
    stream = Api.__new__(Api)
    stream.base, stream.key = api.base, session["authentication_token"]
    events = {"events": [{"event_name": name, "payload": {"stripe_customer_id": "c", "value": "1"}}]}
    out = stream("POST", "/v2/billing/meter_event_stream", json=events)
    assert out.status_code == 200 and out.json() == {}  # Stripe: no response attributes


def test_summaries_and_core_events_answer_stripes_lists(api, meter):
    day = int(time.time()) // 86400 * 86400
    path = f"/v1/billing/meters/{meter['id']}/event_summaries"
    for extra in ({}, {"value_grouping_window": "hour"}):
        query = {"customer": "c", "start_time": day, "end_time": day + 86400, **extra}
        listed = conforms(api("GET", path, params=query), "GetBillingMetersIdEventSummaries.200")
        for summary in listed["data"]:
            assert not stripe_schemas.problems("billing.meter_event_summary", summary)
    events = conforms(api("GET", "/v2/core/events", params={"limit": 5}), "GetV2CoreEvents.200")
    assert events["data"]
    conforms(api("GET", f"/v2/core/events/{events['data'][0]['id']}"), "v2.core.event")


def test_v1_errors_are_stripes_error_object(api, meter):
    conforms(api("POST", "/v1/billing/meters", data={"display_name": "x"}), "error", 400)
    conforms(api("GET", "/v1/billing/meters/mtr_" + "0" * 24), "error", 404)
    conforms(api("GET", "/v1/billing/meters", params={"starting_after": "mtr_nope"}), "error", 404)
    conforms(api("GET", "/v1/billing/meters", headers={"Authorization": "Bearer sk_test_nope"}), "error", 401)
    conforms(api("GET", "/v1/no/such/route"), "error", 404)


def test_v2_errors_carry_the_code_stripe_requires(api, meter, runner):
    name = meter["event_name"]
    cases = [
        (
            api(
                "POST",
                "/v2/billing/meter_events",
                data="{not json",
                headers={"Content-Type": "application/json"},
            ),
            400,
        ),
        (api("POST", "/v2/billing/meter_event_stream", json={"events": []}, auth=False), 401),
        (
            api(
                "POST",
                "/v2/billing/meter_event_adjustments",
                json={"event_name": name, "type": "cancel", "cancel": {"identifier": "never-sent"}},
            ),
            400,
        ),
        (api("GET", "/v2/core/events/evt_" + "0" * 24), 404),
        (api("GET", "/v2/core/events", headers={"Authorization": "Bearer sk_test_nope"}), 401),
        (api("GET", "/v2/core/events", params={"limit": "1_000"}), 400),
    ]
    for response, status in cases:
        conforms(response, "v2.error", status)
    ident = uuid.uuid4().hex
    sent = {"event_name": name, "identifier": ident, "payload": {"stripe_customer_id": "c", "value": "1"}}
    assert api("POST", "/v2/billing/meter_events", json=sent).status_code == 200
    other = {"event_name": name + "_other", "type": "cancel", "cancel": {"identifier": ident}}
    mismatch = conforms(api("POST", "/v2/billing/meter_event_adjustments", json=other), "v2.error", 400)
    assert mismatch["error"]["code"] in ("meter_event_name_mismatch", "meter_event_not_found")
    session = api("POST", "/v2/billing/meter_event_session", json={}).json()
    stream = Api.__new__(Api)
    stream.base, stream.key = api.base, session["authentication_token"]
    empty = conforms(stream("POST", "/v2/billing/meter_event_stream", json={"events": []}), "v2.error", 400)
    assert empty["error"]["code"] == "parameter_invalid_empty"
    requests.get(f"{runner.api_url}/_local/clock", params={"offset": 16 * 60}, timeout=10)
    try:
        expired = stream("POST", "/v2/billing/meter_event_stream", json={"events": [sent]})
    finally:
        requests.get(f"{runner.api_url}/_local/clock", params={"offset": 0}, timeout=10)
    body = conforms(expired, "v2.error.billing_meter_event_session_expired", 401)
    assert body["error"]["type"] == "temporary_session_expired"


def test_core_events_filter_by_created_and_types(api):
    before = datetime.now(UTC) - timedelta(seconds=2)
    names = [f"flt_{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for name in names:
        form = {"display_name": name, "event_name": name, "default_aggregation[formula]": "count"}
        assert api("POST", "/v1/billing/meters", data=form).status_code == 200
    since = before.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    query = {"types[0]": "billing.meter.created", "created[gte]": since, "limit": 2}
    first = conforms(api("GET", "/v2/core/events", params=query), "GetV2CoreEvents.200")
    assert [e["type"] for e in first["data"]] == ["billing.meter.created"] * 2
    assert "types%5B0%5D=billing.meter.created" in first["next_page_url"]
    second = api("GET", first["next_page_url"]).json()
    created = [e["data"]["object"]["event_name"] for e in first["data"] + second["data"]]
    assert created[:3] == names[::-1]
    old = (before - timedelta(days=1)).isoformat().replace("+00:00", "Z")
    none = api("GET", "/v2/core/events", params={"created[lt]": old}).json()
    assert none["data"] == [] and none["next_page_url"] is None
    bad = api("GET", "/v2/core/events", params={"created[gte]": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "created[gte]"


# Every answer, the gateway's own included, carries a Request-Id.


def test_gateway_answers_carry_a_request_id(runner):
    for method, path, headers in (
        ("GET", "/v1/account", {}),  # no key: the gateway's 401
        ("GET", "/v1/account", {"Authorization": "Bearer sk_test_nope"}),
        ("GET", "/v1/unknown", {"Authorization": f"Bearer {KEY}"}),  # unknown route: the gateway's 404
        ("DELETE", "/v1/billing/meters", {"Authorization": f"Bearer {KEY}"}),
        ("GET", "/openapi.json", {}),
    ):
        out = requests.request(method, runner.api_url + path, headers=headers, timeout=30)
        assert out.headers.get("Request-Id"), (method, path, out.status_code)
        if out.status_code >= 400:
            assert not stripe_schemas.problems("error", out.json()), out.text


def test_a_malformed_content_length_gets_a_stripe_shaped_400(runner):
    host, port = urlsplit(runner.api_url).hostname, urlsplit(runner.api_url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /v1/billing/meters HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):  # the runner answers, then closes the connection
            answer += chunk
    head, _, body = answer.decode("latin-1").partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400") and "Request-Id: req_" in head
    assert not stripe_schemas.problems("error", json.loads(body))


def test_http_basic_auth_with_the_key_as_user_name(runner):
    assert (
        requests.get(f"{runner.api_url}/v1/account", auth=(KEY, ""), timeout=30).json()["object"] == "account"
    )
    assert (
        requests.get(f"{runner.api_url}/v1/account", auth=("sk_test_nope", ""), timeout=30).status_code == 401
    )
    token = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    listed = requests.get(f"{runner.api_url}/v1/billing/meters", headers={"Authorization": token}, timeout=30)
    assert listed.status_code == 200 and listed.json()["object"] == "list"


def test_48_simultaneous_connections_are_all_answered(runner):
    host, port = urlsplit(runner.api_url).hostname, urlsplit(runner.api_url).port
    request = (
        f"GET /v1/account HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nConnection: close\r\n\r\n"
    )
    sockets = [socket.create_connection((host, port), timeout=60) for _ in range(48)]  # all open at once

    def exchange(sock: socket.socket) -> bytes:
        with sock:
            sock.sendall(request.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)

    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(exchange, sockets))
    assert all(a.startswith(b"HTTP/1.1 200") and b"Request-Id: req_" in a for a in answers)
