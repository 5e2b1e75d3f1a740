"""Parameters and request bodies of the metering routes for the served OpenAPI document.

Powertools generates the routes and path parameters from the resolvers; the metering
handlers read their parameters themselves (Stripe's bracket form encoding), so this
module declares them the way Stripe's own OpenAPI description does: v1 bodies as
`application/x-www-form-urlencoded` with `deepObject` encoding for nested objects (JSON
is accepted too), v2 bodies as JSON, query parameters in Stripe's bracket style. The
declarations describe what a valid request looks like; the service checks every request
itself (see docs/api.md), so fuzzers may send anything.
"""

from copy import deepcopy

STRING = {"type": "string", "maxLength": 5000}
INTEGER = {"type": "integer"}
EXPAND = {"type": "array", "items": {"type": "string", "maxLength": 5000}}
NAME = {"type": "string", "minLength": 1, "maxLength": 100}
PAYLOAD = {
    "type": "object",
    "additionalProperties": {"type": "string", "maxLength": 500},
    "maxProperties": 50,
}
DATE_TIME = {"type": "string", "format": "date-time"}


def _query(name: str, schema: dict, required: bool = False) -> dict:
    deep = schema.get("type") in ("object", "array")
    return {
        "name": name,
        "in": "query",
        "required": required,
        "style": "deepObject" if deep else "form",
        "explode": True,
        "schema": schema,
    }


def _form(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    encoding = {
        name: {"style": "deepObject", "explode": True}
        for name, spec in properties.items()
        if spec.get("type") in ("object", "array")
    }
    return {
        "required": bool(required),
        "content": {
            "application/x-www-form-urlencoded": {"schema": schema, "encoding": encoding},
            "application/json": {"schema": deepcopy(schema)},
        },
    }


def _json(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {"application/json": {"schema": schema}}}


LIST = [
    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
    _query("starting_after", STRING),
    _query("ending_before", STRING),
    _query("expand", EXPAND),
]
CANCEL = {"type": "object", "properties": {"identifier": NAME}, "required": ["identifier"]}

OPERATIONS: dict[tuple[str, str], dict] = {
    ("get", "/v1/billing/meters"): {
        "parameters": [_query("status", {"type": "string", "enum": ["active", "inactive"]}), *LIST]
    },
    ("post", "/v1/billing/meters"): {
        "requestBody": _form(
            {
                "display_name": {"type": "string", "minLength": 1, "maxLength": 250},
                "event_name": NAME,
                "default_aggregation": {
                    "type": "object",
                    "properties": {"formula": {"type": "string", "enum": ["count", "last", "sum"]}},
                    "required": ["formula"],
                },
                "customer_mapping": {
                    "type": "object",
                    "properties": {"event_payload_key": NAME, "type": {"type": "string", "enum": ["by_id"]}},
                    "required": ["event_payload_key", "type"],
                },
                "value_settings": {
                    "type": "object",
                    "properties": {"event_payload_key": NAME},
                    "required": ["event_payload_key"],
                },
                "event_time_window": {"type": "string", "enum": ["day", "hour"]},
                "expand": EXPAND,
            },
            ["default_aggregation", "display_name", "event_name"],
        )
    },
    ("get", "/v1/billing/meters/{meter_id}"): {"parameters": [_query("expand", EXPAND)]},
    ("post", "/v1/billing/meters/{meter_id}"): {
        "requestBody": _form(
            {"display_name": {"type": "string", "minLength": 1, "maxLength": 250}, "expand": EXPAND}
        )
    },
    ("post", "/v1/billing/meters/{meter_id}/deactivate"): {"requestBody": _form({"expand": EXPAND})},
    ("post", "/v1/billing/meters/{meter_id}/reactivate"): {"requestBody": _form({"expand": EXPAND})},
    ("get", "/v1/billing/meters/{meter_id}/event_summaries"): {
        "parameters": [
            _query("customer", {"type": "string", "minLength": 1, "maxLength": 100}, True),
            _query("start_time", INTEGER, True),
            _query("end_time", INTEGER, True),
            _query("value_grouping_window", {"type": "string", "enum": ["day", "hour"]}),
            *LIST,
        ]
    },
    ("post", "/v1/billing/meter_events"): {
        "requestBody": _form(
            {
                "event_name": NAME,
                "payload": PAYLOAD,
                "identifier": NAME,
                "timestamp": INTEGER,
                "expand": EXPAND,
            },
            ["event_name", "payload"],
        )
    },
    ("post", "/v1/billing/meter_event_adjustments"): {
        "requestBody": _form(
            {
                "event_name": NAME,
                "type": {"type": "string", "enum": ["cancel"]},
                "cancel": CANCEL,
                "expand": EXPAND,
            },
            ["event_name", "type"],
        )
    },
    ("post", "/v2/billing/meter_events"): {
        "requestBody": _json(
            {"event_name": NAME, "payload": PAYLOAD, "identifier": NAME, "timestamp": DATE_TIME},
            ["event_name", "payload"],
        )
    },
    ("post", "/v2/billing/meter_event_adjustments"): {
        "requestBody": _json(
            {"event_name": NAME, "type": {"type": "string", "enum": ["cancel"]}, "cancel": CANCEL},
            ["cancel", "event_name", "type"],
        )
    },
    ("post", "/v2/billing/meter_event_stream"): {
        "security": [{"sessionToken": []}],
        "requestBody": _json(
            {
                "events": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": {
                        "type": "object",
                        "properties": {
                            "event_name": NAME,
                            "payload": PAYLOAD,
                            "identifier": NAME,
                            "timestamp": DATE_TIME,
                        },
                        "required": ["event_name", "payload"],
                        "additionalProperties": False,
                    },
                }
            },
            ["events"],
        ),
    },
    ("get", "/v2/core/events"): {
        "parameters": [
            _query(
                "created",
                {
                    "type": "object",
                    "properties": {key: DATE_TIME for key in ("gt", "gte", "lt", "lte")},
                    "additionalProperties": False,
                },
            ),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
            _query("object_id", STRING),
            _query("page", STRING),
            _query(
                "types", {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 5000}}
            ),
        ]
    },
}

SECURITY_SCHEMES = {
    "secretKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "A secret key (sk_test_... or sk_live_...); or HTTP Basic, key as user name.",
    },
    "secretKeyBasic": {"type": "http", "scheme": "basic", "description": "The secret key as user name."},
    "sessionToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "A meter event session token (POST /v2/billing/meter_event_session).",
    },
}


def annotate(document: dict) -> dict:
    """Add the declared parameters, bodies and security schemes of the routes in `document`."""
    touched = False
    for (method, path), spec in OPERATIONS.items():
        operation = document.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        touched = True
        spec = deepcopy(spec)
        if "parameters" in spec:
            declared = {(p.get("in"), p.get("name")) for p in operation.get("parameters", [])}
            extra = [p for p in spec.pop("parameters") if (p["in"], p["name"]) not in declared]
            operation["parameters"] = [*operation.get("parameters", []), *extra]
        operation.update(spec)
    if touched:
        document.setdefault("components", {}).setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    return document
