from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering import values


@pytest.mark.parametrize(
    "text", ["NaN", "nan", "Infinity", "-inf", "1e5", "1E-2", "", " ", "abc", "1.2.3", "--1", "0x10", "1_000"]
)
def test_rejected(text):
    with pytest.raises(values.InvalidValue):
        values.parse(text)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("25", Decimal(25)),
        ("-3.5", Decimal("-3.5")),
        ("0.1", Decimal("0.1")),
        (".5", Decimal("0.5")),
        ("+7", Decimal(7)),
        ("123456789012345", Decimal("123456789012345")),
        ("0.000123456789012345", None),
    ],
)
def test_accepted(text, expected):
    assert values.parse(text) == (expected if expected is not None else Decimal(text))


@pytest.mark.parametrize("text", ["1234567890123456", "1.234567890123456", "1000000000000000"])
def test_too_many_digits(text):
    with pytest.raises(values.TooManyDigits):
        values.parse(text)


def test_exact_sum():
    assert sum(values.parse("0.1") for _ in range(3)) == Decimal("0.3")


@given(st.decimals(allow_nan=False, allow_infinity=False, places=6, min_value=-(10**8), max_value=10**8))
def test_round_trip_of_plain_decimals(d):
    text = format(d, "f")
    assert values.parse(text) == d
