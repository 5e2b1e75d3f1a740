"""Line amounts: per-unit, graduated and volume tiers, flat amounts, transform_quantity and
the one rounding per line, against a small independent oracle (hypothesis).

The oracle walks the quantity unit by unit (tier boundaries are whole numbers, so the
fractional rest lies in the tier of the next whole unit), finds volume tiers by counting
the boundaries below the quantity, and rounds with Decimal's ROUND_HALF_UP.
"""

from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from billing.amounts import Pricing, Tier, line_amount, line_quantity

amount = st.decimals(min_value=0, max_value=1000, places=12, allow_nan=False, allow_infinity=False)
flat = st.one_of(st.just(Decimal(0)), st.integers(0, 5000).map(Decimal), amount)
quantity = st.decimals(min_value=0, max_value=900, places=12, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw):
    bounds = sorted(set(draw(st.lists(st.integers(1, 600), min_size=0, max_size=4))))
    ups = [*bounds, None]
    return tuple(Tier(up, draw(amount), draw(flat)) for up in ups)


def oracle_round(value: Decimal) -> int:
    with localcontext(prec=200):
        return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def tier_of_unit(tiers, n: int):
    """The tier holding the n-th unit (units 1..up_to[0] in the first tier, ...)."""
    for index, tier in enumerate(tiers):
        if tier.up_to is None or n <= tier.up_to:
            return index
    raise AssertionError


def oracle_graduated(tiers, q: Decimal) -> Decimal:
    with localcontext(prec=200):
        whole = int(q)
        rest = q - whole
        total = Decimal(0)
        touched = {0}
        for n in range(1, whole + 1):
            index = tier_of_unit(tiers, n)
            touched.add(index)
            total += tiers[index].unit
        if rest:
            index = tier_of_unit(tiers, whole + 1)
            touched.add(index)
            total += rest * tiers[index].unit
        return total + sum((tiers[i].flat for i in touched), Decimal(0))


def oracle_volume(tiers, q: Decimal) -> Decimal:
    with localcontext(prec=200):
        index = sum(1 for t in tiers if t.up_to is not None and t.up_to < q)
        return q * tiers[index].unit + tiers[index].flat


@settings(max_examples=300, deadline=None)
@given(tiers=tier_lists(), q=quantity)
def test_graduated_tiers_match_the_unit_by_unit_oracle(tiers, q):
    pricing = Pricing("tiered", tiers_mode="graduated", tiers=tiers)
    assert line_amount(pricing, q) == oracle_round(oracle_graduated(tiers, q))


@settings(max_examples=300, deadline=None)
@given(tiers=tier_lists(), q=quantity)
def test_volume_tiers_match_the_oracle(tiers, q):
    pricing = Pricing("tiered", tiers_mode="volume", tiers=tiers)
    assert line_amount(pricing, q) == oracle_round(oracle_volume(tiers, q))


@settings(max_examples=300, deadline=None)
@given(unit=amount, q=quantity, divide_by=st.integers(1, 1000), up=st.booleans(), transform=st.booleans())
def test_per_unit_and_transform_quantity_match_the_oracle(unit, q, divide_by, up, transform):
    pricing = Pricing(
        "per_unit",
        unit=unit,
        divide_by=divide_by if transform else None,
        round=("up" if up else "down") if transform else None,
    )
    with localcontext(prec=200):
        units = q
        if transform:
            units = (q / divide_by).to_integral_value(rounding=ROUND_CEILING if up else ROUND_FLOOR)
        want = oracle_round(units * unit)
    assert line_amount(pricing, q) == want


def test_worked_examples():
    graduated = Pricing(
        "tiered",
        tiers_mode="graduated",
        tiers=(Tier(1000, Decimal(0), Decimal(500)), Tier(None, Decimal("0.25"), Decimal(100))),
    )
    assert line_amount(graduated, Decimal(0)) == 500  # the first tier's flat fee is a base fee
    assert line_amount(graduated, Decimal(1000)) == 500
    assert line_amount(graduated, Decimal("1000.5")) == 500 + 100  # 0.125 rounds down once
    assert line_amount(graduated, Decimal(1002)) == 500 + 100 + 1  # 0.5 rounds up
    volume = Pricing("tiered", tiers_mode="volume", tiers=(Tier(10, Decimal(3)), Tier(None, Decimal(2))))
    assert (line_amount(volume, Decimal(10)), line_amount(volume, Decimal(11))) == (30, 22)
    hours = Pricing("per_unit", unit=Decimal(100), divide_by=60, round="up")
    assert line_amount(hours, Decimal(150)) == 300  # 150 minutes bill 3 hours
    assert line_amount(Pricing("per_unit", unit=Decimal("0.004")), Decimal(3)) == 0  # 0.012 rounds once
    assert line_amount(Pricing("per_unit", unit=Decimal("0.5")), Decimal(3)) == 2  # 1.5 rounds half up


@pytest.mark.parametrize(
    "usage, want",
    [(Decimal("-3"), "0"), (0, "0"), (7, "7"), (Decimal("0.000000000001"), "0.000000000001")],
)
def test_line_quantity_is_never_negative(usage, want):
    assert line_quantity(usage) == Decimal(want)
