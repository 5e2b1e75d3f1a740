"""Asynchronous rejections (stream, bulk) become Stripe error-report events.

One `v1.billing.meter.error_report_triggered` per meter involved and one
`v1.billing.meter.no_meter_found` for events whose name has no meter, each with
`data.reason.error_types[] = {code, error_count, sample_errors[...]}`.
"""

from collections import defaultdict
from dataclasses import dataclass

from metering import meter_lookup, notifications, wire
from metering.accounts import scope_of
from metering.meter_events import MAX_EVENT_NAME, MAX_IDENTIFIER

MAX_SAMPLES = 5
MAX_MESSAGE = 500  # samples echo user input: bounded, so a report always fits one stored item


@dataclass(frozen=True)
class Failure:
    event_name: str
    identifier: str | None
    code: str
    message: str


def _meter_id(scope: str, failure: Failure) -> str | None:
    """The meter of a failure's event name; None for names that cannot name a meter."""
    name = failure.event_name
    if failure.code == "no_meter" or not isinstance(name, str) or not name:
        return None
    if len(name) > MAX_EVENT_NAME or not wire.is_unicode(name):
        return None
    meter = meter_lookup.by_event_name(scope, name)
    return meter["id"] if meter else None


def _identifier(value) -> str | None:
    if not isinstance(value, str) or not wire.is_unicode(value):
        return None
    return wire.clip(value, MAX_IDENTIFIER)


def reports(account_id: str, livemode: bool, failures: list[Failure], started: float, ended: float) -> list:
    """The (type, related object, data) of the reports for a batch of failures."""
    by_meter: dict[str | None, list[Failure]] = defaultdict(list)
    with meter_lookup.batch():
        for failure in failures:
            by_meter[_meter_id(scope_of(account_id, livemode), failure)].append(failure)
    out = []
    for meter_id, group in by_meter.items():
        data = {
            "developer_message_summary": f"{len(group)} meter event(s) were rejected.",
            "reason": {"error_count": len(group), "error_types": _types(group)},
            "validation_start": notifications.rfc3339(started),
            "validation_end": notifications.rfc3339(ended),
        }
        if meter_id is None:
            out.append(("v1.billing.meter.no_meter_found", None, data))
        else:
            out.append(("v1.billing.meter.error_report_triggered", notifications.meter_ref(meter_id), data))
    return out


def publish_once(
    account_id: str, livemode: bool, failures: list[Failure], started: float, ended: float, marker: dict
) -> list[dict]:
    """Publish the reports unless `marker` shows an earlier run did (see notifications)."""
    events = reports(account_id, livemode, failures, started, ended)
    return notifications.publish_once(account_id, livemode, events, marker)


def publish(
    account_id: str, livemode: bool, failures: list[Failure], started: float, ended: float
) -> list[dict]:
    """Publish the reports for a batch of failures; returns the events."""
    return [
        notifications.publish(account_id, livemode, type_, related, data)
        for type_, related, data in reports(account_id, livemode, failures, started, ended)
    ]


def _types(group: list[Failure]) -> list[dict]:
    by_code: dict[str, list[Failure]] = defaultdict(list)
    for failure in group:
        by_code[failure.code].append(failure)
    return [
        {
            "code": code,
            "error_count": len(items),
            "sample_errors": [
                {
                    "error_message": wire.clip(f.message, MAX_MESSAGE),
                    "request": {"identifier": _identifier(f.identifier)},
                }
                for f in items[:MAX_SAMPLES]
            ],
        }
        for code, items in by_code.items()
    ]
