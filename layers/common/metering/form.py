"""Stripe's bracket convention for application/x-www-form-urlencoded bodies.

``a[b]=1`` is an object, ``a[0]=x`` (stripe-python) and ``a[]=x`` (curl) are arrays,
and every leaf value stays a string. Ambiguous or malformed input is rejected with a
:class:`FormError` naming the offending parameter.
"""

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode

MAX_DEPTH = 32
"""Most bracket segments one parameter name may have."""

_NAME = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
_INDEX = re.compile(r"[0-9]+")


class FormError(ValueError):
    """A form body that cannot be decoded; ``param`` names the offending parameter."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class _List:
    """An array under construction: either indexed (``a[0]``) or appended (``a[]``), not both."""

    def __init__(self) -> None:
        self.indexed: dict[int, Any] = {}
        self.appended: list[str] = []


def decode_form(body: str | bytes) -> dict:
    """Decode a form body into nested dicts, lists and string values."""
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormError("body", "Invalid request body: not valid UTF-8.") from exc
    try:
        pairs = parse_qsl(body, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError as exc:
        raise FormError("body", "Invalid request body: percent-encoded bytes are not valid UTF-8.") from exc
    root: dict[str, Any] = {}
    for key, value in pairs:
        _insert(root, key, value)
    return {name: _finish(child, name) for name, child in root.items()}


def _split(key: str) -> tuple[str, list[str]]:
    """``a[b][0]`` -> ``("a", ["b", "0"])``; malformed names raise FormError."""
    match = _NAME.fullmatch(key)
    if not match:
        raise FormError(key or "body", f"Invalid parameter name: {key!r} (malformed brackets or empty name).")
    segments = _SEGMENT.findall(match.group(2))
    if len(segments) > MAX_DEPTH:
        raise FormError(key, f"Invalid parameter name: {key!r} is nested too deeply.")
    if "" in segments[:-1]:
        raise FormError(key, f"Invalid parameter name: {key!r} ('[]' is only allowed at the end).")
    return match.group(1), segments


def _insert(root: dict[str, Any], key: str, value: str) -> None:
    """Place one decoded ``key=value`` pair into the tree rooted at ``root``."""
    name, segments = _split(key)
    node: dict[str, Any] | _List = root
    slot: str | int | None = name
    path = name
    for segment in segments:
        want = _List if segment == "" or _INDEX.fullmatch(segment) else dict
        child = _get(node, slot)
        if child is None:
            child = want()
            _set(node, slot, child, key)
        elif not isinstance(child, want):
            raise FormError(key, f"Invalid parameter {key!r}: {path!r} is already {_kind(child)}.")
        node, path = child, f"{path}[{segment}]"
        if segment == "":
            slot = None
        elif want is _List:
            if len(segment) > 9:
                raise FormError(key, f"Invalid parameter {key!r}: array index too large.")
            slot = int(segment)
        else:
            slot = segment
    existing = _get(node, slot)
    if existing is None:
        _set(node, slot, value, key)
    elif isinstance(existing, str):
        if existing != value:
            raise FormError(key, f"Invalid parameter {key!r}: given twice with different values.")
    else:
        raise FormError(key, f"Invalid parameter {key!r}: {path!r} is already {_kind(existing)}.")


def _get(node: dict[str, Any] | _List, slot: str | int | None) -> Any:
    if isinstance(node, dict):
        return node.get(slot)
    return None if slot is None else node.indexed.get(slot)


def _set(node: dict[str, Any] | _List, slot: str | int | None, value: Any, key: str) -> None:
    if isinstance(node, dict):
        node[slot] = value
    elif node.appended if slot is not None else node.indexed:
        raise FormError(key, f"Invalid parameter {key!r}: cannot mix 'name[]' and 'name[0]' array styles.")
    elif slot is None:
        node.appended.append(value)
    else:
        node.indexed[slot] = value


def _kind(node: Any) -> str:
    return {dict: "an object", _List: "an array"}.get(type(node), "a value")


def _finish(node: Any, path: str) -> Any:
    """Turn the intermediate tree into plain dicts and lists, checking array indices."""
    if isinstance(node, dict):
        return {k: _finish(v, f"{path}[{k}]") for k, v in node.items()}
    if isinstance(node, _List):
        if node.appended:
            return list(node.appended)
        if sorted(node.indexed) != list(range(len(node.indexed))):
            raise FormError(path, f"Invalid array {path!r}: indices must be contiguous from 0.")
        return [_finish(node.indexed[i], f"{path}[{i}]") for i in range(len(node.indexed))]
    return node


def encode_form(data: dict) -> str:
    """Encode nested data the way stripe-python does (``a[b]``, ``a[0]``, brackets as %5B/%5D).

    Like the SDK, ``None`` values are skipped, booleans become ``true``/``false`` and
    other scalars are ``str()``-ed; empty dicts and lists produce nothing.
    ``decode_form(encode_form(d)) == d`` holds for string leaves and non-empty containers.
    Keys that cannot round-trip raise FormError: empty keys, keys containing ``[`` or ``]``,
    and all-digit keys below the top level (they would decode as array indices).
    """
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        _check_key(str(key), str(key), top=True)
        _flatten(str(key), value, pairs)
    return urlencode(pairs)


def _check_key(key: str, param: str, top: bool = False) -> None:
    if not key or "[" in key or "]" in key or (not top and key.isascii() and key.isdigit()):
        raise FormError(param, f"Cannot form-encode key {key!r} under {param!r}.")


def _flatten(prefix: str, value: Any, pairs: list[tuple[str, str]]) -> None:
    if value is None:
        return
    if isinstance(value, dict):
        for key, child in value.items():
            _check_key(str(key), prefix)
            _flatten(f"{prefix}[{key}]", child, pairs)
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            _flatten(f"{prefix}[{index}]", child, pairs)
    elif isinstance(value, bool):
        pairs.append((prefix, "true" if value else "false"))
    else:
        pairs.append((prefix, str(value)))
