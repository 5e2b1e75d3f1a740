"""Meter event endpoints (v1, v2, v2 stream): validation, storage, error reports, metrics."""

import hashlib
import secrets
import time
from collections import Counter

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from metering import clock, error_reports, event_store, meter_events, meter_lookup, store, wire
from metering.accounts import Principal
from metering.errors import StripeError, invalid
from metering.meter_events import FIELDS, Accepted, Rejected, check, parse_rfc3339, parse_unix
from metering.observability import logger, metrics

MAX_STREAM_EVENTS = 100
STORE_ATTEMPTS = 3
BACKOFF_SECONDS = 0.05


def _count(accepted: int, rejected: Counter) -> None:
    if accepted:
        metrics.add_metric(name="MeterEventsAccepted", unit=MetricUnit.Count, value=accepted)
    for code, n in rejected.items():
        name = "MeterEventsDuplicate" if code == "duplicate_identifier" else f"MeterEventsRejected_{code}"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=n)


def _one(
    who: Principal, params: dict, timestamp_parser, request_key: str | None, fingerprint: str | None
) -> event_store.Stored:
    """One event. With an `Idempotency-Key` (the SDK always sends one), the event item
    records the key and the request's fingerprint, and an event without identifier gets one
    derived from the key: a retry, whether of a success (a replay) or of an error whose
    write had in fact happened, finds its own event and answers as the first time; the
    same key with other parameters is an `idempotency_error`. No idempotency record is
    written: the event is the record."""
    wire.reject_unknown(params, FIELDS | {"expand"})
    source = None
    if request_key:
        source = "request#" + request_key
        if params.get("identifier") in (None, ""):
            digest = hashlib.sha256(f"{who.scope}\n{request_key}".encode()).hexdigest()
            params = {**params, "identifier": "mev_" + digest[:24]}
    try:
        event = check(who.account_id, who.livemode, params, timestamp_parser(params.get("timestamp")))
        stored = event_store.record(event, source, fingerprint)
    except StripeError as exc:
        _count(0, Counter([exc.code or "invalid"]))
        raise
    _count(0 if stored.replayed else 1, Counter())
    return stored


def create(
    who: Principal, params: dict, version: int, request_key: str | None = None, fingerprint: str | None = None
) -> tuple[dict, bool]:
    """A v1 or v2 meter event; returns (the object, whether it is a replay)."""
    if version == 1:
        stored = _one(who, params, parse_unix, request_key, fingerprint)
        return meter_events.v1_object(stored.event, stored.received), stored.replayed
    stored = _one(who, params, parse_rfc3339, request_key, fingerprint)
    return meter_events.v2_object(stored.event, stored.received), stored.replayed


def create_v1(who: Principal, params: dict, request_key: str | None = None) -> dict:
    return create(who, params, 1, request_key)[0]


def create_v2(who: Principal, params: dict, request_key: str | None = None) -> dict:
    return create(who, params, 2, request_key)[0]


def _stream_events(params: dict) -> list:
    wire.reject_unknown(params, {"events"})
    events = params.get("events")
    if not isinstance(events, list):
        raise invalid(
            "Missing required param: events (an array of 1 to 100 meter events).",
            "events",
            "parameter_missing" if events is None else "parameter_invalid_type",
        )
    if not events:
        raise invalid(
            f"events must hold between 1 and {MAX_STREAM_EVENTS} meter events; got none.",
            "events",
            "parameter_invalid_empty",
        )
    if len(events) > MAX_STREAM_EVENTS:
        raise invalid(
            f"events must hold between 1 and {MAX_STREAM_EVENTS} meter events; got {len(events)}.",
            "events",
            "array_length_exceeds_maximum",
        )
    return events


def stream(who: Principal, params: dict) -> dict:
    """Persist the valid events, report the invalid ones as error-report events, answer {}."""
    events = _stream_events(params)
    started = clock.now()
    with meter_lookup.batch():
        accepted, failures = _check_all(who, events)
    results = _store(accepted)
    stored = sum(isinstance(r, event_store.Stored) for r in results)
    faults = [r for r in results if not isinstance(r, event_store.Stored | Rejected)]
    if faults and not stored:
        _raise(faults[0])  # nothing was stored: the client's retry is safe
    for event, result in zip(accepted, results, strict=True):
        if isinstance(result, Rejected):
            failures.append(
                error_reports.Failure(event.event_name, event.identifier, result.code, result.message)
            )
        elif not isinstance(result, event_store.Stored):
            message = "The event could not be stored; it does not count. Send it again."
            failures.append(
                error_reports.Failure(event.event_name, event.identifier, "internal_error", message)
            )
    _count(stored, Counter(f.code for f in failures))
    if failures:
        try:
            error_reports.publish(who.account_id, who.livemode, failures, started, clock.now())
        except Exception:  # the valid events are stored: answering an error now would double count
            logger.exception("could not publish error reports", extra={"failures": len(failures)})
    return {}


def _check_all(who: Principal, events: list) -> tuple[list[Accepted], list[error_reports.Failure]]:
    accepted: list[Accepted] = []
    failures: list[error_reports.Failure] = []
    for raw in events:
        if not isinstance(raw, dict):
            failures.append(error_reports.Failure("", None, "invalid_event", "Each event must be an object."))
            continue
        name, identifier = raw.get("event_name"), raw.get("identifier")
        name = name if isinstance(name, str) else ""
        identifier = identifier if isinstance(identifier, str) else None
        try:
            wire.reject_unknown(raw, FIELDS)
            accepted.append(check(who.account_id, who.livemode, raw, parse_rfc3339(raw.get("timestamp"))))
        except StripeError as exc:
            failures.append(
                error_reports.Failure(name, identifier, exc.code or "invalid_request", exc.message)
            )
    return accepted, failures


def _store(events: list[Accepted]) -> list:
    """Store a request's events; faults are retried, and an event whose write may have
    happened is recognised by its per-request source tag instead of being stored twice."""
    request = secrets.token_hex(8)
    sources = [f"stream#{request}#{i}" for i in range(len(events))]
    results = event_store.record_many(events, sources=sources)
    for attempt in range(STORE_ATTEMPTS):
        pending = [i for i, r in enumerate(results) if not isinstance(r, event_store.Stored | Rejected)]
        if not pending:
            break
        time.sleep(BACKOFF_SECONDS * 2**attempt)
        again = event_store.record_many([events[i] for i in pending], sources=[sources[i] for i in pending])
        for i, result in zip(pending, again, strict=True):
            results[i] = result
    for i, result in enumerate(results):
        if not isinstance(result, event_store.Stored | Rejected):
            try:  # did the last attempt write it before failing?
                results[i] = event_store.stored_from(events[i], sources[i]) or result
            except Exception:
                logger.exception("could not tell whether an event was stored")
    return results


def _raise(fault: Exception):
    if isinstance(fault, ClientError):
        store.raise_retryable(fault)
    raise fault
