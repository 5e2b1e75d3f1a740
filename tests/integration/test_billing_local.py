"""The local side of billing: the admin grace-period command and the schedule trigger."""

import threading
import time

from billing import account_settings
from metering_local import admin, schedule_trigger, triggers
from metering_local.template import Template
from tests.billing_fixtures import billing_fixture, principal  # noqa: F401 - provides the `billing` fixture
from tests.conftest import ROOT


def test_set_grace_period_per_mode(billing, capsys):
    who = principal()
    table = billing.tables["MainTable"]
    assert account_settings.grace_seconds(who.scope) == 3600  # the default: one hour
    assert (
        admin.main(["--table", table, "set-grace-period", "--account", who.account_id, "--hours", "2"]) == 0
    )
    assert account_settings.grace_seconds(who.scope) == 7200
    live = principal(live=True)
    args = [
        "--table",
        table,
        "set-grace-period",
        "--account",
        live.account_id,
        "--hours",
        "0",
        "--mode",
        "live",
    ]
    assert admin.main(args) == 0
    assert account_settings.grace_seconds(live.scope) == 0
    assert account_settings.grace_seconds(type(live)(live.account_id, False).scope) == 3600
    bad = ["--table", table, "set-grace-period", "--account", who.account_id, "--hours", "73"]
    assert admin.main(bad) == 2 and "72 hours" in capsys.readouterr().err


def test_rate_expressions():
    assert schedule_trigger.rate_seconds("rate(1 minute)") == 60
    assert schedule_trigger.rate_seconds("rate(5 minutes)") == 300
    assert schedule_trigger.rate_seconds("rate(2 hours)") == 7200
    assert schedule_trigger.rate_seconds("cron(0 12 * * ? *)") is None


def test_deliver_retries_and_follows_continuations():
    seen, failures = [], iter([True, False, False, False])

    def invoke(event):
        seen.append(event)
        if next(failures):
            raise RuntimeError("injected")
        if "shards" not in event:
            return {"continuations": [{"shards": ["DUE#1"]}, {"shards": ["DUE#2"]}]}
        return {"continuations": []}

    triggers.deliver(invoke, schedule_trigger.scheduled_event("rule"), schedule_trigger.log)
    assert [e.get("shards") for e in seen] == [None, None, ["DUE#1"], ["DUE#2"]]
    assert seen[0]["detail-type"] == "Scheduled Event"


def test_the_template_schedule_invokes_the_cycles_function():
    template = Template.load(ROOT / "template.yaml")
    called = threading.Event()
    functions = []

    class Runtime:
        def invoke(self, logical_id, event):
            functions.append(logical_id)
            called.set()
            return {"continuations": []}

    stop = threading.Event()
    threads = schedule_trigger.start(template, Runtime(), stop, interval=0.05)
    try:
        assert called.wait(5)
        deadline = time.time() + 5
        while "BillingCyclesFunction" not in functions and time.time() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
    assert "BillingCyclesFunction" in functions
