"""Meter event validation: one core for v1, v2, the stream and bulk uploads.

`check()` turns raw fields into an `Accepted` event or raises `Rejected` with one of
the contract's codes; it never writes.
"""

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from metering import clock, customer_clocks, meter_lookup, values, wire
from metering.accounts import scope_of
from metering.errors import StripeError, invalid

MAX_AGE_SECONDS = 35 * 24 * 3600
MAX_FUTURE_SECONDS = 5 * 60
MAX_PAYLOAD_KEYS = 50
MAX_IDENTIFIER = 100
MAX_EVENT_NAME = 100
MAX_CUSTOMER = 100  # the customer id in the payload: part of rollup and slot keys
MAX_PAYLOAD_KEY = 100
MAX_PAYLOAD_VALUE = 500
FIELDS = {"event_name", "payload", "identifier", "timestamp"}


class Rejected(StripeError):
    """A meter event that does not count, with the reason's code."""


def reject(code: str, message: str, param: str | None = None) -> Rejected:
    return Rejected(message, 400, "invalid_request_error", code, param, should_retry=False)


@dataclass(frozen=True)
class Accepted:
    account_id: str
    livemode: bool
    meter: dict
    event_name: str
    identifier: str
    timestamp: int
    payload: dict
    customer: str
    value: Decimal | None

    @property
    def scope(self) -> str:
        return scope_of(self.account_id, self.livemode)

    @property
    def formula(self) -> str:
        return self.meter["formula"]


def _text(value, param: str, limit: int | None = None) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise invalid(f"Invalid {param}: must be a string.", param)
    text = (
        value if isinstance(value, str) else format(value, "f") if isinstance(value, Decimal) else str(value)
    )
    if limit is not None and len(text) > limit:
        raise invalid(
            f"Invalid {param}: must be at most {limit} characters.", param, "string_length_exceeds_maximum"
        )
    if not wire.is_unicode(text):
        raise invalid(f"Invalid {param}: must be valid Unicode text.", param)
    return text


def new_identifier() -> str:
    return "mev_" + secrets.token_hex(12)


def check(account_id: str, livemode: bool, fields: dict, timestamp: int | None) -> Accepted:
    """Validate one event; `timestamp` is already parsed (v1 unix seconds, v2 RFC 3339)."""
    event_name = fields.get("event_name")
    if event_name in (None, ""):
        raise reject("parameter_missing", "Missing required param: event_name.", "event_name")
    event_name = _text(event_name, "event_name", MAX_EVENT_NAME)
    payload = fields.get("payload")
    if payload is None:
        raise reject("parameter_missing", "Missing required param: payload.", "payload")
    if not isinstance(payload, dict):
        raise invalid("Invalid payload: must be an object of string keys and values.", "payload")
    if len(payload) > MAX_PAYLOAD_KEYS:
        raise invalid(f"Invalid payload: at most {MAX_PAYLOAD_KEYS} keys are allowed.", "payload")
    payload = {
        _text(k, "payload", MAX_PAYLOAD_KEY): _text(v, f"payload[{k}]", MAX_PAYLOAD_VALUE)
        for k, v in payload.items()
    }
    identifier = fields.get("identifier")
    identifier = (
        new_identifier() if identifier in (None, "") else _text(identifier, "identifier", MAX_IDENTIFIER)
    )
    if not identifier.isprintable():
        raise invalid("Invalid identifier: must contain only printable characters.", "identifier")

    scope = scope_of(account_id, livemode)
    meter, clocks = meter_lookup.for_event(scope, event_name, livemode)
    if meter is None:
        raise reject("no_meter", f"No meter was found matching event_name {event_name}.", "event_name")
    if meter["status"] != "active":
        raise reject("archived_meter", f"The meter for event_name {event_name} is inactive.", "event_name")
    customer_key = meter["customer_key"]
    customer = payload.get(customer_key, "")
    if customer.strip() == "":
        raise reject(
            "meter_event_no_customer_defined",
            f"The payload has no customer: expected key {customer_key}.",
            f"payload[{customer_key}]",
        )
    if len(customer) > MAX_CUSTOMER:
        raise invalid(
            f"Invalid payload[{customer_key}]: a customer id must be at most {MAX_CUSTOMER} characters.",
            f"payload[{customer_key}]",
            "string_length_exceeds_maximum",
        )
    # A customer on a test clock lives on the clock's frozen time (billing's test clocks).
    frozen = customer_clocks.frozen_time(scope, livemode, customer, clocks) if clocks else None
    now = frozen if frozen is not None else int(clock.now())
    timestamp = now if timestamp is None else timestamp
    if timestamp < now - MAX_AGE_SECONDS:
        raise reject(
            "timestamp_too_far_in_past", "The timestamp is more than 35 days in the past.", "timestamp"
        )
    if timestamp > now + MAX_FUTURE_SECONDS:
        raise reject(
            "timestamp_in_future", "The timestamp is more than 5 minutes in the future.", "timestamp"
        )
    value = None
    if meter["formula"] != "count":
        value = _value(payload, meter["value_key"])
    return Accepted(account_id, livemode, meter, event_name, identifier, timestamp, payload, customer, value)


def _value(payload: dict, value_key: str) -> Decimal:
    param = f"payload[{value_key}]"
    if value_key not in payload:
        raise reject(
            "meter_event_value_not_found", f"The payload has no value: expected key {value_key}.", param
        )
    text = payload[value_key]
    try:
        return values.parse(text)
    except values.TooManyDigits:
        raise reject(
            "meter_event_value_too_many_digits",
            f"The value {text} has more than {values.MAX_DIGITS} significant digits.",
            param,
        ) from None
    except values.TooManyDecimalPlaces:
        raise reject(
            "meter_event_invalid_value",
            f"The value {text} has more than {values.MAX_DECIMAL_PLACES} decimal places.",
            param,
        ) from None
    except values.InvalidValue:
        raise reject(
            "meter_event_invalid_value", f"The value {text!r} is not a decimal number.", param
        ) from None


def parse_unix(value, param: str = "timestamp") -> int | None:
    """Unix seconds: a JSON integer or ASCII digits (no `1_000`, `\u0661\u0662`, `5\\n` or `5.0`)."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    return wire.integer(value, param)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}:[0-9]{2})"
    r"(?:\.([0-9]{1,9}))?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def parse_rfc3339(value, param: str = "timestamp") -> int | None:
    """Unix seconds of an RFC 3339 date-time with a time zone, e.g. `2026-11-24T10:00:00Z`."""
    ms = parse_rfc3339_ms(value, param)
    return None if ms is None else ms // 1000


def parse_rfc3339_ms(value, param: str = "timestamp") -> int | None:
    """Unix milliseconds of an RFC 3339 date-time with a time zone (ASCII digits only)."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    found = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if found is None:
        shown = wire.clip(value, 40) if isinstance(value, str) else type(value).__name__
        raise invalid(f"Invalid {param}: {shown!r} is not an RFC 3339 date-time with a time zone.", param)
    day, time_, fraction, zone = found.groups()
    text = f"{day}T{time_}{'.' + fraction[:6].ljust(6, '0') if fraction else ''}"
    try:
        parsed = datetime.fromisoformat(text + ("+00:00" if zone in "Zz" else zone))
    except ValueError:
        raise invalid(f"Invalid {param}: {value!r} is not a valid date-time.", param) from None
    return (parsed - _EPOCH) // timedelta(milliseconds=1)


def v1_object(event: Accepted, created: int) -> dict:
    return {
        "object": "billing.meter_event",
        "created": created,
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": event.livemode,
        "payload": event.payload,
        "timestamp": event.timestamp,
    }


def v2_object(event: Accepted, created: int) -> dict:
    from metering.notifications import rfc3339

    return {
        "object": "v2.billing.meter_event",
        "created": rfc3339(created),
        "event_name": event.event_name,
        "identifier": event.identifier,
        "livemode": event.livemode,
        "payload": event.payload,
        "timestamp": rfc3339(event.timestamp),
    }
