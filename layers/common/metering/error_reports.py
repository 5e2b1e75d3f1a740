"""Asynchronous rejections (stream, bulk) become Stripe error-report events.

One `v1.billing.meter.error_report_triggered` per meter involved and one
`v1.billing.meter.no_meter_found` for events whose name has no meter, each with
`data.reason.error_types[] = {code, error_count, sample_errors[...]}`.
"""

from collections import defaultdict
from dataclasses import dataclass

from metering import meter_lookup, notifications
from metering.accounts import scope_of

MAX_SAMPLES = 5


@dataclass(frozen=True)
class Failure:
    event_name: str
    identifier: str | None
    code: str
    message: str


def publish(
    account_id: str, livemode: bool, failures: list[Failure], started: float, ended: float
) -> list[dict]:
    """Publish the reports for a batch of failures; returns the events."""
    by_meter: dict[str | None, list[Failure]] = defaultdict(list)
    with meter_lookup.batch():
        for failure in failures:
            meter = (
                meter_lookup.by_event_name(scope_of(account_id, livemode), failure.event_name)
                if failure.code != "no_meter"
                else None
            )
            by_meter[meter["id"] if meter else None].append(failure)
    published = []
    for meter_id, group in by_meter.items():
        data = {
            "developer_message_summary": f"{len(group)} meter event(s) were rejected.",
            "reason": {"error_count": len(group), "error_types": _types(group)},
            "validation_start": notifications.rfc3339(started),
            "validation_end": notifications.rfc3339(ended),
        }
        if meter_id is None:
            type_, related = "v1.billing.meter.no_meter_found", None
        else:
            type_, related = "v1.billing.meter.error_report_triggered", notifications.meter_ref(meter_id)
        published.append(notifications.publish(account_id, livemode, type_, related, data))
    return published


def _types(group: list[Failure]) -> list[dict]:
    by_code: dict[str, list[Failure]] = defaultdict(list)
    for failure in group:
        by_code[failure.code].append(failure)
    return [
        {
            "code": code,
            "error_count": len(items),
            "sample_errors": [
                {"error_message": f.message, "request": {"identifier": f.identifier}}
                for f in items[:MAX_SAMPLES]
            ],
        }
        for code, items in by_code.items()
    ]
