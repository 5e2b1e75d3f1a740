"""Stripe wire conventions: request parameters, JSON bodies, list objects."""

import json
import re
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from metering.errors import StripeError, invalid, missing, unknown
from metering.form import FormError, decode_form

_NUMBER = "\x00num:"
_NUMBER_RE = re.compile(r'"\\u0000num:([-0-9.]+)"')


def _encode_decimal(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _NUMBER + format_decimal(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros ("0.3", "-12", "1000")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def dumps(obj: Any) -> str:
    """JSON with Decimals written as exact JSON numbers."""
    return _NUMBER_RE.sub(r"\1", json.dumps(obj, default=_encode_decimal, separators=(",", ":")))


def parse_body(body: str | None, content_type: str | None) -> dict:
    """Decode a v1 request body: bracket form encoding, or JSON (ours)."""
    if not body:
        return {}
    if content_type and "json" in content_type.lower():
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise invalid(f"Invalid JSON body: {exc}", "body") from exc
        if not isinstance(data, dict):
            raise invalid("The JSON body must be an object.", "body")
        return data
    try:
        return decode_form(body)
    except FormError as exc:
        raise invalid(str(exc), exc.param) from exc


def param_name(loc: tuple) -> str:
    """('customer_mapping', 'event_payload_key') -> customer_mapping[event_payload_key]."""
    head, *rest = [str(p) for p in loc] or ["body"]
    return head + "".join(f"[{p}]" for p in rest)


def validate(model: type[BaseModel], params: dict) -> BaseModel:
    """Validate request parameters; the first problem becomes a Stripe error naming its param."""
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise to_stripe_error(exc) from exc


def to_stripe_error(exc: ValidationError) -> StripeError:
    err = exc.errors(include_url=False)[0]
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    name = param_name(loc)
    kind = err["type"]
    if kind == "missing":
        return missing(name)
    if kind == "extra_forbidden":
        return unknown(name)
    if kind == "string_too_short":
        return invalid(f"Invalid {name}: must not be empty.", name, "parameter_invalid_empty")
    if kind == "string_too_long":
        limit = err.get("ctx", {}).get("max_length")
        return invalid(
            f"Invalid {name}: must be at most {limit} characters.", name, "string_length_exceeds_maximum"
        )
    if kind.startswith("int_"):
        return invalid(
            f"Invalid integer: {err.get('input')!r} for {name}.", name, "parameter_invalid_integer"
        )
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return invalid(f"Invalid {name}: must be one of {expected}.", name)
    message = err.get("msg", "Invalid value").removeprefix("Value error, ")
    return invalid(f"Invalid {name}: {message}", name)


def list_object(url: str, data: list, has_more: bool) -> dict:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def reject_unknown(params: dict, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise unknown(name)
