from decimal import Decimal

import pytest

from metering import wire
from metering.errors import StripeError
from metering.keys import key, part


def test_decimals_are_exact_json_numbers():
    assert wire.dumps(
        {"v": Decimal("0.30"), "n": Decimal("-12.5000"), "big": Decimal("123456789012345.123")}
    ) == ('{"v":0.3,"n":-12.5,"big":123456789012345.123}')
    assert wire.dumps({"z": Decimal("-0"), "e": Decimal("1E+3")}) == '{"z":0,"e":1000}'


def test_json_and_form_bodies():
    assert wire.parse_body('{"a": {"b": 1}}', "application/json") == {"a": {"b": 1}}
    assert wire.parse_body("a%5Bb%5D=1", "application/x-www-form-urlencoded") == {"a": {"b": "1"}}
    with pytest.raises(StripeError) as err:
        wire.parse_body("[1]", "application/json")
    assert err.value.param == "body"


def test_key_parts_cannot_forge_separators():
    assert key("A", part("a#b")) != key("A", part("a"), part("b"))
    assert "#" not in part("x#y/z") and part("ü") != part("u")
