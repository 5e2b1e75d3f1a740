"""What a quantity costs under a price, exactly, rounded once per line.

Arithmetic is exact (fractions) until the very end: the line's amount in minor units is
rounded half up to an integer once, after per-unit, tier and flat amounts are added.

- per_unit: quantity x unit_amount_decimal; with `transform_quantity` the quantity is
  first divided by `divide_by` and rounded up or down to whole units.
- tiered, graduated: tier i holds the quantity in (up_to[i-1], up_to[i]] (the first
  tier starts at 0); each tier the quantity reaches bills its units at its unit amount
  plus its flat amount. The first tier is always reached, so its flat amount is billed
  even for a quantity of 0 (a base fee).
- tiered, volume: the whole quantity is billed at the first tier with quantity <= up_to,
  plus that tier's flat amount (also for 0).
"""

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext
from fractions import Fraction

QUANTITY_PLACES = 12


@dataclass(frozen=True)
class Tier:
    up_to: int | None  # None: infinity (the last tier)
    unit: Decimal = Decimal(0)
    flat: Decimal = Decimal(0)


@dataclass(frozen=True)
class Pricing:
    scheme: str  # "per_unit" | "tiered"
    unit: Decimal = Decimal(0)
    tiers_mode: str | None = None  # "graduated" | "volume"
    tiers: tuple[Tier, ...] = ()
    divide_by: int | None = None
    round: str | None = None  # "up" | "down"


def billed_quantity(pricing: Pricing, quantity: Fraction) -> Fraction:
    """The quantity the unit amount applies to (after transform_quantity)."""
    if pricing.divide_by is None:
        return quantity
    ratio = quantity / pricing.divide_by
    return Fraction(math.ceil(ratio) if pricing.round == "up" else math.floor(ratio))


def exact_amount(pricing: Pricing, quantity: Decimal) -> Fraction:
    """The amount in minor units before rounding; quantity must not be negative."""
    q = billed_quantity(pricing, Fraction(quantity))
    if pricing.scheme == "per_unit":
        return q * Fraction(pricing.unit)
    if pricing.tiers_mode == "volume":
        tier = next(t for t in pricing.tiers if t.up_to is None or q <= t.up_to)
        return q * Fraction(tier.unit) + Fraction(tier.flat)
    total, lower = Fraction(0), 0
    for index, tier in enumerate(pricing.tiers):
        if index > 0 and q <= lower:
            break
        top = q if tier.up_to is None else min(q, Fraction(tier.up_to))
        total += max(top - lower, Fraction(0)) * Fraction(tier.unit) + Fraction(tier.flat)
        if tier.up_to is None:
            break
        lower = tier.up_to
    return total


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def line_amount(pricing: Pricing, quantity: Decimal) -> int:
    return round_half_up(exact_amount(pricing, quantity))


def line_quantity(aggregate: Decimal | int) -> Decimal:
    """A line's quantity_decimal: max(0, usage), truncated to 12 decimal places."""
    value = Decimal(aggregate)
    if value <= 0:
        return Decimal(0)
    with localcontext(prec=200):
        return value.quantize(Decimal(1).scaleb(-QUANTITY_PLACES), rounding=ROUND_DOWN)
