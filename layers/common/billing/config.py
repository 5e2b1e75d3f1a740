"""Billing's environment configuration, read once at cold start.

A plain frozen dataclass, not a pydantic model (see metering.config): both fields are read
as the strings the environment holds.
"""

import os
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True, slots=True)
class BillingSettings:
    billing_table: str = "metering-billing"
    cycles_function: str | None = None


@cache
def billing_settings() -> BillingSettings:
    return BillingSettings(
        billing_table=os.environ.get("BILLING_TABLE", "metering-billing"),
        cycles_function=os.environ.get("BILLING_CYCLES_FUNCTION"),
    )
