"""Meter event values: exact decimals from strings, at most 15 significant digits."""

import re
from decimal import Decimal

MAX_DIGITS = 15
_DECIMAL = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


class InvalidValue(ValueError):
    pass


class TooManyDigits(ValueError):
    pass


def significant_digits(text: str) -> int:
    digits = text.lstrip("+-")
    whole, _, fraction = digits.partition(".")
    joined = (whole + fraction.rstrip("0")).lstrip("0")
    return len(joined)


def parse(text: str) -> Decimal:
    """Decimal of a value string; NaN, infinities, exponents, blanks and words are rejected."""
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise InvalidValue(text)
    if significant_digits(text) > MAX_DIGITS:
        raise TooManyDigits(text)
    return Decimal(text)
