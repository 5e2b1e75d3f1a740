"""Environment configuration, read once at cold start.

A plain frozen dataclass, not a pydantic model: every function imports this module, and
pydantic's import alone costs more than the rest of a small function's cold start. Every
field is a string read from the environment (which only holds strings), so there is nothing
to validate beyond the defaults.
"""

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class Settings:
    main_table: str = "metering-main"
    events_table: str = "metering-events"
    rollups_table: str = "metering-rollups"
    idempotency_table: str = "metering-idempotency"
    event_bus: str = "metering-events"
    upload_bucket: str = "metering-uploads"


# Field -> the environment variable it is read from.
_ENV = {
    "main_table": "MAIN_TABLE",
    "events_table": "EVENTS_TABLE",
    "rollups_table": "ROLLUPS_TABLE",
    "idempotency_table": "IDEMPOTENCY_TABLE",
    "event_bus": "EVENT_BUS_NAME",
    "upload_bucket": "UPLOAD_BUCKET",
}


@cache
def settings() -> Settings:
    return Settings(**{field: os.environ[var] for field, var in _ENV.items() if var in os.environ})
