"""Stripe's response schemas (tests/contract/stripe_schemas/, see its README) as JSON Schema validators."""

import json
import re
from copy import deepcopy
from datetime import datetime
from functools import cache
from pathlib import Path

from jsonschema import Draft202012Validator, FormatChecker

FOLDER = Path(__file__).resolve().parent / "stripe_schemas"
REF = "#/components/schemas/"

# Properties we send beyond Stripe's schema, on purpose (documented in docs/api.md), as
# dotted paths inside the named schema.
EXTENSIONS = {"v2.error": {"error.param"}}
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")

_checker = FormatChecker()


@_checker.checks("date-time", raises=ValueError)
def _date_time(value) -> bool:
    if not isinstance(value, str) or not re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value
    ):
        raise ValueError(f"not an RFC 3339 date-time: {value!r}")
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@cache
def raw() -> dict[str, dict]:
    return {path.name.removesuffix(".json"): json.loads(path.read_text()) for path in FOLDER.glob("*.json")}


def _convert(schema: dict, v2: bool, extensions: set[str]) -> dict:
    """OpenAPI 3.0 schema object -> JSON Schema: refs inlined, nullable, closed objects."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix(REF)
        return _convert(raw()[name], v2 or name.startswith("v2."), EXTENSIONS.get(name, set()))
    out = deepcopy({k: v for k, v in schema.items() if not k.startswith("x-") and k != "nullable"})
    for key in ("anyOf", "oneOf", "allOf"):
        if key in out:
            out[key] = [_convert(s, v2, set()) for s in out[key]]
    if "items" in out:
        out["items"] = _convert(out["items"], v2, set())
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(out["additionalProperties"], v2, set())
    if "properties" in out:
        required = set(out.get("required", []))
        props = {}
        for name, sub in out["properties"].items():
            inner = {e.split(".", 1)[1] for e in extensions if e.startswith(name + ".")}
            converted = _convert(sub, v2, inner)
            if v2 and name not in required:
                converted = _nullable(converted)
            props[name] = converted
        for name in extensions:
            if "." not in name:
                props.setdefault(name, {"type": "string"})
        out["properties"] = props
        out.setdefault("additionalProperties", False)
    if schema.get("nullable"):
        out = _nullable(out)
    return out


def _nullable(schema: dict) -> dict:
    if (
        schema.get("type")
        and isinstance(schema["type"], str)
        and "enum" not in schema
        and "anyOf" not in schema
    ):
        return {**schema, "type": [schema["type"], "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


@cache
def validator(name: str) -> Draft202012Validator:
    schema = _convert({"$ref": REF + name}, name.startswith("v2."), set())
    return Draft202012Validator(schema, format_checker=_checker)


def problems(name: str, instance) -> list[str]:
    """What in `instance` breaks Stripe's schema `name` (empty when it conforms)."""
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in validator(name).iter_errors(instance)
    ]
