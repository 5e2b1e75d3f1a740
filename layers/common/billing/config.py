"""Billing's environment configuration, validated once at cold start."""

from functools import cache

from pydantic import BaseModel, Field


class BillingSettings(BaseModel):
    billing_table: str = Field(alias="BILLING_TABLE", default="metering-billing")
    cycles_function: str | None = Field(alias="BILLING_CYCLES_FUNCTION", default=None)


@cache
def billing_settings() -> BillingSettings:
    import os

    return BillingSettings.model_validate(dict(os.environ))
