"""The local runner's gateway: the REQUEST authorizer is called as API Gateway calls it,
its answers cached only as the template's `ReauthorizeEvery` says."""

import copy
import json
import threading
from pathlib import Path

from metering_local import gateway as gateway_module
from metering_local.gateway import Gateway, policy_allows
from metering_local.template import Template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
ARN = "arn:aws:execute-api:us-east-1:123456789012:localapi"


class FakeRuntime:
    """Answers the authorizer from `keys` (secret -> account) and echoes the context otherwise."""

    def __init__(self, authorizer: str, keys: dict, resource: str = f"{ARN}/local/*"):
        self.authorizer, self.keys, self.resource = authorizer, keys, resource
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def invoke(self, name: str, event: dict):
        if name != self.authorizer:
            body = {"authorizer": event["requestContext"]["authorizer"], "path": event["path"]}
            return {
                "statusCode": 200,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps(body),
            }
        key = event["headers"]["Authorization"].removeprefix("Bearer ")
        with self.lock:
            self.calls.append(key)
        if key not in self.keys:
            raise RuntimeError("Unauthorized")
        effect = "Deny" if self.keys[key] is None else "Allow"
        return {
            "principalId": self.keys[key] or "nobody",
            "policyDocument": {
                "Version": "2012-10-17",
                "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": self.resource}],
            },
            "context": {"account_id": self.keys[key] or "", "livemode": "false"},
        }


def _template(ttl: int | None) -> Template:
    template = copy.deepcopy(Template.load(TEMPLATE))
    identity = template.api()["Auth"]["Authorizers"][template.api()["Auth"]["DefaultAuthorizer"]]["Identity"]
    if ttl is None:
        identity.pop("ReauthorizeEvery", None)
    else:
        identity["ReauthorizeEvery"] = ttl
    return template


def _get(gateway: Gateway, key: str, path: str = "/v1/account"):
    status, _headers, body = gateway.handle("GET", path, {"Authorization": f"Bearer {key}"}, b"")
    return status, json.loads(body)


def test_the_templates_authorizer_runs_on_every_request():
    template = Template.load(TEMPLATE)
    runtime = FakeRuntime(template.authorizer_function(), {"sk_a": "acct_a"})
    gateway = Gateway(template, runtime)
    assert gateway.auth_ttl == template.authorizer_identity()[1]
    # docs/deploy.md promises that a revoked key is refused on its next request
    assert gateway.auth_ttl == 0, "template.yaml caches the authorizer's answers"
    for _ in range(3):
        assert _get(gateway, "sk_a")[1]["authorizer"]["account_id"] == "acct_a"
    assert runtime.calls == ["sk_a"] * 3


def test_a_cached_answer_is_reused_per_key_until_the_ttl(monkeypatch):
    template = _template(300)
    runtime = FakeRuntime(
        template.authorizer_function(), {"sk_a": "acct_a", "sk_b": "acct_b", "sk_deny": None}
    )
    gateway = Gateway(template, runtime)
    now = [1000.0]
    monkeypatch.setattr(gateway_module.time, "monotonic", lambda: now[0])
    for _ in range(3):
        assert _get(gateway, "sk_a")[1]["authorizer"]["account_id"] == "acct_a"
        assert _get(gateway, "sk_b", "/v1/billing/meters")[1]["authorizer"]["account_id"] == "acct_b"
        assert _get(gateway, "sk_nope")[0] == 401  # a failure is not cached
        assert _get(gateway, "sk_deny")[0] == 401  # an explicit Deny policy is
    assert sorted(runtime.calls) == ["sk_a", "sk_b", "sk_deny"] + ["sk_nope"] * 3
    now[0] += 299
    assert _get(gateway, "sk_a")[0] == 200 and runtime.calls.count("sk_a") == 1
    now[0] += 1
    assert _get(gateway, "sk_a")[0] == 200 and runtime.calls.count("sk_a") == 2  # expired: asked again


def test_sams_default_ttl_applies_when_the_template_does_not_say():
    template = _template(None)
    assert Gateway(template, FakeRuntime(template.authorizer_function(), {})).auth_ttl == 300


def test_a_cached_policy_is_evaluated_against_each_requests_method():
    template = _template(300)
    runtime = FakeRuntime(template.authorizer_function(), {"sk_a": "acct_a"}, f"{ARN}/local/GET/v1/account")
    gateway = Gateway(template, runtime)
    assert _get(gateway, "sk_a")[0] == 200
    assert _get(gateway, "sk_a", "/v1/billing/meters")[0] == 401  # the cached policy does not cover it
    assert runtime.calls == ["sk_a"]


def test_policy_evaluation():
    def policy(*statements):
        return {"policyDocument": {"Statement": list(statements)}}

    arn = f"{ARN}/local/POST/v1/billing/meter_events"
    assert policy_allows(policy({"Effect": "Allow", "Resource": f"{ARN}/*"}), arn)
    assert policy_allows(policy({"Effect": "Allow", "Resource": [f"{ARN}/local/???T/*"]}), arn)
    assert not policy_allows(policy({"Effect": "Allow", "Resource": f"{ARN}/local/GET/*"}), arn)
    assert not policy_allows(
        policy({"Effect": "Allow", "Resource": "*"}, {"Effect": "Deny", "Resource": f"{ARN}/*/POST/*"}), arn
    )
    assert not policy_allows(policy(), arn)
    assert policy_allows({"policyDocument": {"Statement": {"Effect": "Allow", "Resource": "*"}}}, arn)
