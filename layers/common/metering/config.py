"""Environment configuration, validated once at cold start."""

from functools import cache

from pydantic import BaseModel, Field


class Settings(BaseModel):
    main_table: str = Field(alias="MAIN_TABLE", default="metering-main")
    events_table: str = Field(alias="EVENTS_TABLE", default="metering-events")
    rollups_table: str = Field(alias="ROLLUPS_TABLE", default="metering-rollups")
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", default="metering-idempotency")
    event_bus: str = Field(alias="EVENT_BUS_NAME", default="metering-events")
    upload_bucket: str = Field(alias="UPLOAD_BUCKET", default="metering-uploads")


@cache
def settings() -> Settings:
    import os

    return Settings.model_validate(dict(os.environ))
