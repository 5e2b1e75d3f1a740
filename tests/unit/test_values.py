from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering import values


@pytest.mark.parametrize(
    "text",
    [
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "1e5",
        "1E-2",
        "",
        " ",
        "abc",
        "1.2.3",
        "--1",
        "0x10",
        "1_000",
        "\u0661\u0662",
        "1\n",
        "\uff11",
    ],
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
        ("0.000123456789", None),
        ("-999999999999.999", None),
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


@pytest.mark.parametrize("text", ["0.0000000000001", "1.1234567890123", "-0.000123456789012345"])
def test_too_many_decimal_places(text):
    with pytest.raises(values.TooManyDecimalPlaces):
        values.parse(text)


def test_sums_beyond_28_digits_are_exact():
    """Issue 16 class 9: Python's default context keeps 28 digits; rollups must not round."""
    from metering.rollups import Bucket

    big, tiny = values.parse("999999999999999"), values.parse("0.000000000001")
    total = Bucket()
    for _ in range(100):
        total.merge(Bucket(total=big))
    total.merge(Bucket(total=tiny))
    assert total.total == Decimal("99999999999999900.000000000001")  # 29 digits
    assert sum([big] * 100) + tiny != total.total  # what the default context makes of it


def test_exact_context_raises_instead_of_rounding():
    from decimal import Inexact

    with pytest.raises(Inexact), values.exact():
        Decimal(1) / Decimal(3)
