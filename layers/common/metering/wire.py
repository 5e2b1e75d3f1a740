"""Stripe wire conventions: request parameters, JSON bodies, list objects."""

import json
import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from metering.errors import StripeError, invalid, missing, unknown
from metering.form import MAX_DEPTH, FormError, decode_form

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

# pydantic is imported only by what validates with it (the request models, `WireInt`,
# `validate`): importing it costs more than a small function's whole cold start.

_STRING = json.encoder.encode_basestring_ascii
_INTEGER = re.compile(r"-?[0-9]+")
MAX_INTEGER_DIGITS = 19


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros ("0.3", "-12", "1000")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _encode(obj: Any, out: list[str]) -> None:
    """Append the JSON text of `obj`; Decimals become exact JSON numbers.

    Written out rather than patched into json.dumps: no in-band marker exists that a user
    string could forge, because strings are only ever written through the string escaper.
    """
    if isinstance(obj, str):
        out.append(_STRING(obj))
    elif obj is None or isinstance(obj, bool):
        out.append("null" if obj is None else "true" if obj else "false")
    elif isinstance(obj, Decimal):
        if not obj.is_finite():
            raise ValueError(f"not a finite number: {obj}")
        out.append(format_decimal(obj))
    elif isinstance(obj, int | float):
        out.append(json.dumps(obj, allow_nan=False))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(_STRING(str(k)))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    else:
        raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    """Compact JSON with Decimals written as exact JSON numbers."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out)


def is_unicode(text: str) -> bool:
    """False for strings that cannot be stored as UTF-8 (lone surrogates from JSON escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_unicode(value: Any, param: str = "") -> None:
    """Refuse parameters holding strings that are not valid Unicode, naming the param."""
    if isinstance(value, str):
        if not is_unicode(value):
            raise invalid(f"Invalid {param or 'body'}: must be valid Unicode text.", param or "body")
    elif isinstance(value, dict):
        for k, v in value.items():
            name = f"{param}[{k}]" if param else str(k)
            if not is_unicode(str(k)):
                raise invalid(f"Invalid {param or 'body'}: keys must be valid Unicode text.", param or "body")
            check_unicode(v, name)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_unicode(v, f"{param}[{i}]")


def depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of decoded JSON (1 for a scalar), counted without recursion up to `limit` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        if isinstance(node, dict):
            stack.extend((child, level + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, level + 1) for child in node)
    return deepest


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def loads(text: str, **options) -> Any:
    """Strict JSON: no NaN or Infinity, at most MAX_DEPTH levels; ValueError otherwise."""
    try:
        value = json.loads(text, parse_constant=_no_constant, **options)
    except RecursionError:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep") from None
    if depth(value) > MAX_DEPTH:
        raise ValueError(f"nested more than {MAX_DEPTH} levels deep")
    return value


def parse_body(body: str | None, content_type: str | None) -> dict:
    """Decode a v1 request body: bracket form encoding, or JSON (ours)."""
    if not body:
        return {}
    if content_type and "json" in content_type.lower():
        try:
            data = loads(body)
        except ValueError as exc:
            raise invalid(f"Invalid JSON body: {clip(str(exc))}", "body", "invalid_json") from None
        if not isinstance(data, dict):
            raise invalid("The JSON body must be an object.", "body", "invalid_json")
        return data
    try:
        return decode_form(body)
    except FormError as exc:
        raise invalid(str(exc), exc.param) from exc


def clip(text: str, limit: int = 200) -> str:
    """`text` cut to `limit` characters (with an ellipsis), for echoing user input in messages."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def integer(value: Any, param: str) -> int:
    """A wire integer: a JSON integer or a string of ASCII digits with an optional minus sign.

    Python-only spellings that int() would take (`1_000`, non-ASCII digits, surrounding
    whitespace or newlines, `+5`), floats and booleans are refused naming `param`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value) and len(value.lstrip("-")) <= MAX_INTEGER_DIGITS:
        return int(value)
    shown = clip(value if isinstance(value, str) else type(value).__name__, 40)
    raise invalid(f"Invalid integer: {shown!r} for {param}.", param, "parameter_invalid_integer")


def _wire_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value) and len(value.lstrip("-")) <= MAX_INTEGER_DIGITS:
        return int(value)
    from pydantic_core import PydanticCustomError

    raise PydanticCustomError("int_parsing", "Input should be an integer")


def __getattr__(name: str) -> Any:
    """`WireInt`, an integer parameter read strictly (see `integer`), for pydantic models:
    built on first use, so that importing this module does not import pydantic."""
    if name == "WireInt":
        from typing import Annotated

        from pydantic import BeforeValidator

        global WireInt
        WireInt = Annotated[int, BeforeValidator(_wire_int)]
        return WireInt
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def param_name(loc: tuple) -> str:
    """('customer_mapping', 'event_payload_key') -> customer_mapping[event_payload_key]."""
    head, *rest = [str(p) for p in loc] or ["body"]
    return head + "".join(f"[{p}]" for p in rest)


def validate(model: "type[BaseModel]", params: dict) -> "BaseModel":
    """Validate request parameters; the first problem becomes a Stripe error naming its param."""
    from pydantic import ValidationError

    try:
        return model.model_validate(params)
    except ValidationError as exc:
        raise to_stripe_error(exc) from exc


def to_stripe_error(exc: "ValidationError") -> StripeError:
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
        shown = err.get("input")
        shown = clip(shown, 40) if isinstance(shown, str) else type(shown).__name__
        return invalid(f"Invalid integer: {shown!r} for {name}.", name, "parameter_invalid_integer")
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return invalid(f"Invalid {name}: must be one of {expected}.", name)
    message = err.get("msg", "Invalid value").removeprefix("Value error, ")
    return invalid(f"Invalid {name}: {clip(message)}", name)


def list_object(url: str, data: list, has_more: bool) -> dict:
    return {"object": "list", "url": url, "has_more": has_more, "data": data}


def reject_unknown(params: dict, allowed: set[str]) -> None:
    for name in params:
        if name not in allowed:
            raise unknown(name)


def lazy_models(module: str, models, names) -> Any:
    """A module `__getattr__` that hands out request models defined on first use (`models()`
    returns them by name), so importing the module does not import pydantic."""
    names = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in names:
            return models()[name]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
