"""Shared fixtures: moto state created from template.yaml, handlers loaded like Lambda."""

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "MeteringTests")


@pytest.fixture
def aws(monkeypatch):
    """An in-process moto account with the template's tables, bucket and bus; env set for handlers."""
    from moto import mock_aws

    from metering import aws as clients
    from metering import config
    from metering_local import aws_endpoint, moto_atomic
    from metering_local.template import Template

    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto_atomic.install()
    with mock_aws():
        template = Template.load(ROOT / "template.yaml")
        names = aws_endpoint.provision(template, "metering-uploads")
        for key, value in aws_endpoint.function_environment(template, names).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("UPLOAD_BUCKET", "metering-uploads")
        config.settings.cache_clear()
        clients.reset()
        yield names
        config.settings.cache_clear()
        clients.reset()


@pytest.fixture
def account(aws):
    """A registered test key and its account id."""
    from metering.accounts import create_key

    secret, account_id = create_key(secret="sk_test_integration")
    return secret, account_id


@pytest.fixture
def handler():
    """Load a template function's handler as Lambda would (fresh module)."""
    from metering_local.lambda_runtime import LambdaContext, load_handler
    from metering_local.template import Template

    functions = Template.load(ROOT / "template.yaml").functions()
    counter = iter(range(10_000))

    def invoke(logical_id: str, event: dict):
        fn = functions[logical_id]
        return load_handler(fn, 1000 + next(counter))(event, LambdaContext(logical_id, fn.timeout))

    return invoke


def sample_event(name: str, **replace) -> dict:
    """An events/ file, with `{{placeholders}}` replaced."""
    text = (EVENTS / name).read_text()
    for key, value in replace.items():
        text = text.replace("{{" + key + "}}", value)
    return json.loads(text)
