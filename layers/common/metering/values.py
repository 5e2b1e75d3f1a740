"""Meter event values: exact decimals from strings.

The contract: a value has at most 15 significant digits and at most 12 decimal places, so
every value is a whole number of 10^-12 units below 10^27 of them. Sums of up to 10^20
such values need at most 47 digits; `EXACT` computes with 60 and traps any rounding, so
arithmetic on values is exact or raises, never silently rounded (Python's default context
keeps only 28 digits).
"""

import re
from decimal import Context, Decimal, Inexact, InvalidOperation, Overflow, Rounded, localcontext

MAX_DIGITS = 15
MAX_DECIMAL_PLACES = 12
EXACT = Context(prec=60, traps=[Inexact, Rounded, InvalidOperation, Overflow])
_DECIMAL = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\Z")


class InvalidValue(ValueError):
    pass


class TooManyDigits(ValueError):
    pass


class TooManyDecimalPlaces(ValueError):
    pass


def significant_digits(text: str) -> int:
    digits = text.lstrip("+-")
    whole, _, fraction = digits.partition(".")
    joined = (whole + fraction.rstrip("0")).lstrip("0")
    return len(joined)


def decimal_places(text: str) -> int:
    return len(text.partition(".")[2].rstrip("0"))


def parse(text: str) -> Decimal:
    """Decimal of a value string; NaN, infinities, exponents, blanks and words are rejected."""
    if not isinstance(text, str) or not _DECIMAL.match(text):
        raise InvalidValue(text)
    if significant_digits(text) > MAX_DIGITS:
        raise TooManyDigits(text)
    if decimal_places(text) > MAX_DECIMAL_PLACES:
        raise TooManyDecimalPlaces(text)
    return Decimal(text)


def exact():
    """A context manager for arithmetic on values: exact, or an exception."""
    return localcontext(EXACT)
