"""Stripe bracket form encoding: decode_form / encode_form."""

from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.form import FormError, decode_form, encode_form

# --- scalars ---------------------------------------------------------------


def test_scalar():
    assert decode_form("a=1") == {"a": "1"}


def test_blank_value():
    assert decode_form("a=") == {"a": ""}
    assert decode_form("a") == {"a": ""}


def test_empty_body():
    assert decode_form("") == {}
    assert decode_form(b"") == {}


def test_values_stay_strings():
    assert decode_form("n=25&b=true&f=1.5") == {"n": "25", "b": "true", "f": "1.5"}


def test_percent_decoding_and_plus():
    assert decode_form("a=hello+world%21&b=%E2%82%AC%2B") == {"a": "hello world!", "b": "€+"}


def test_same_scalar_twice_same_value_is_fine():
    assert decode_form("a=1&a=1") == {"a": "1"}


# --- nesting ---------------------------------------------------------------


def test_nested_object():
    assert decode_form("default_aggregation[formula]=sum") == {"default_aggregation": {"formula": "sum"}}


def test_deeper_nesting():
    assert decode_form("a[b][c]=1&a[b][d]=2&a[e]=3") == {"a": {"b": {"c": "1", "d": "2"}, "e": "3"}}


def test_key_with_special_characters():
    assert decode_form("payload[a%23b/c+d]=1") == {"payload": {"a#b/c d": "1"}}
    assert decode_form("payload[a#b/c d:e]=1".replace("#", "%23")) == {"payload": {"a#b/c d:e": "1"}}


def test_unicode_keys_and_values():
    body = encode_form({"payload": {"clé ✓": "värde 🎉"}})
    assert decode_form(body) == {"payload": {"clé ✓": "värde 🎉"}}
    assert decode_form(body.encode()) == {"payload": {"clé ✓": "värde 🎉"}}


# --- arrays ----------------------------------------------------------------


def test_sdk_style_array():
    assert decode_form("expand[0]=x&expand[1]=y") == {"expand": ["x", "y"]}


def test_sdk_style_array_out_of_order():
    assert decode_form("expand[1]=y&expand[2]=z&expand[0]=x") == {"expand": ["x", "y", "z"]}


def test_curl_style_array():
    assert decode_form("expand[]=x&expand[]=y") == {"expand": ["x", "y"]}


def test_array_of_objects():
    body = "items[0][price]=p&items[0][qty]=2&items[1][price]=q"
    assert decode_form(body) == {"items": [{"price": "p", "qty": "2"}, {"price": "q"}]}


def test_array_of_arrays():
    assert decode_form("a[0][0]=x&a[0][1]=y&a[1][0]=z") == {"a": [["x", "y"], ["z"]]}


@pytest.mark.parametrize(
    "body, param",
    [
        ("expand[1]=y", "expand"),
        ("expand[0]=x&expand[2]=z", "expand"),
        ("a[b][0]=x&a[b][5]=y", "a[b]"),
        ("items[0][p]=1&items[0][q][1]=2", "items[0][q]"),
    ],
)
def test_non_contiguous_indices(body, param):
    with pytest.raises(FormError) as exc:
        decode_form(body)
    assert exc.value.param == param


def test_mixed_array_styles():
    with pytest.raises(FormError) as exc:
        decode_form("expand[]=x&expand[0]=y")
    assert exc.value.param == "expand[0]"
    with pytest.raises(FormError):
        decode_form("expand[0]=x&expand[]=y")


def test_empty_brackets_only_at_the_end():
    with pytest.raises(FormError) as exc:
        decode_form("items[][price]=p")
    assert exc.value.param == "items[][price]"


def test_huge_index():
    with pytest.raises(FormError):
        decode_form("a[" + "9" * 5000 + "]=x")


# --- conflicts and malformed names -------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        ("a=1&a[b]=2", "a[b]"),
        ("a[b]=2&a=1", "a"),
        ("a[b]=1&a[0]=2", "a[0]"),
        ("a[0]=1&a[b]=2", "a[b]"),
        ("a=1&a=2", "a"),
        ("a[b]=1&a[b]=2", "a[b]"),
        ("a[0]=1&a[0]=2", "a[0]"),
        ("a[]=1&a=2", "a"),
        ("payload[value]=1&payload[value][x]=2", "payload[value][x]"),
    ],
)
def test_conflicts(body, param):
    with pytest.raises(FormError) as exc:
        decode_form(body)
    assert exc.value.param == param
    assert param in str(exc.value)


@pytest.mark.parametrize("key", ["a[b", "a]b", "[x]", "a[b]c", "a[b[c]]", "a[b]]", "[]"])
def test_malformed_brackets(key):
    with pytest.raises(FormError) as exc:
        decode_form(f"{key}=1")
    assert exc.value.param == key


def test_empty_top_level_name():
    with pytest.raises(FormError):
        decode_form("=1")
    with pytest.raises(FormError):
        decode_form("a=1&=2")


def test_too_deep():
    with pytest.raises(FormError):
        decode_form("a" + "[b]" * 100 + "=1")


def test_form_error_is_value_error():
    with pytest.raises(ValueError):
        decode_form("a=1&a=2")


# --- bytes -----------------------------------------------------------------


def test_bytes_body():
    assert decode_form(b"a[b]=%C3%A9&c=\xc3\xa9") == {"a": {"b": "é"}, "c": "é"}


def test_invalid_utf8_bytes():
    with pytest.raises(FormError) as exc:
        decode_form(b"a=\xff")
    assert exc.value.param == "body"


def test_invalid_utf8_percent_escape():
    with pytest.raises(FormError) as exc:
        decode_form("a=%FF")
    assert exc.value.param == "body"


# --- stripe-python wire format ----------------------------------------------

SDK_BODY = "payload%5Bvalue%5D=25&payload%5Bstripe_customer_id%5D=cus_1"
SDK_DATA = {"payload": {"value": "25", "stripe_customer_id": "cus_1"}}


def test_stripe_python_encoded_brackets():
    assert decode_form(SDK_BODY) == SDK_DATA


def test_raw_brackets():
    assert decode_form("payload[value]=25&payload[stripe_customer_id]=cus_1") == SDK_DATA


def test_encode_matches_stripe_python():
    assert encode_form(SDK_DATA) == SDK_BODY
    pairs = [("payload[value]", "25"), ("payload[stripe_customer_id]", "cus_1")]
    assert urlencode(pairs) == SDK_BODY


def test_encode_matches_stripe_sdk_encoder():
    encode = pytest.importorskip("stripe._encode")
    data = {
        "event_name": "api call",
        "payload": {"value": "25", "a#b/c d": "ü"},
        "expand": ["x", "y"],
        "items": [{"price": "p", "qty": 2}, {"price": "q"}],
        "flag": True,
        "skipped": None,
    }
    assert encode_form(data) == urlencode(list(encode._api_encode(data)))


# --- encode_form -------------------------------------------------------------


def test_encode_nested_and_lists():
    data = {"a": "1", "b": {"c": {"d": "x y"}}, "e": ["p", {"q": "r"}]}
    assert encode_form(data) == "a=1&b%5Bc%5D%5Bd%5D=x+y&e%5B0%5D=p&e%5B1%5D%5Bq%5D=r"
    assert decode_form(encode_form(data)) == data


def test_encode_scalars_like_the_sdk():
    assert decode_form(encode_form({"n": 25, "t": True, "f": False, "x": None})) == {
        "n": "25",
        "t": "true",
        "f": "false",
    }


def test_encode_empty():
    assert encode_form({}) == ""


@pytest.mark.parametrize(
    "data",
    [{"a[b]": "1"}, {"a]": "1"}, {"": "1"}, {"a": {"": "1"}}, {"a": {"b]": "1"}}, {"a": {"0": "x"}}],
)
def test_encode_rejects_keys_that_cannot_round_trip(data):
    with pytest.raises(FormError):
        encode_form(data)


def test_encode_allows_digit_top_level_key():
    assert decode_form(encode_form({"0": "x"})) == {"0": "x"}


# --- round trip property -------------------------------------------------------

keys = st.text(min_size=1).filter(lambda k: "[" not in k and "]" not in k)
nested_keys = keys.filter(lambda k: not (k.isascii() and k.isdigit()))


def _values(depth: int) -> st.SearchStrategy:
    if depth == 0:
        return st.text()
    inner = _values(depth - 1)
    return st.one_of(
        st.text(),
        st.dictionaries(nested_keys, inner, min_size=1, max_size=4),
        st.lists(
            st.one_of(
                st.text(),
                st.dictionaries(
                    nested_keys, _values(depth - 2) if depth > 1 else st.text(), min_size=1, max_size=3
                ),
            ),
            min_size=1,
            max_size=4,
        ),
    )


forms = st.dictionaries(keys, _values(3), max_size=5)


@given(forms)
def test_round_trip(data):
    assert decode_form(encode_form(data)) == data


@given(forms)
def test_round_trip_raw_brackets(data):
    body = encode_form(data).replace("%5B", "[").replace("%5D", "]")
    assert decode_form(body) == data


@given(forms)
def test_round_trip_bytes(data):
    assert decode_form(encode_form(data).encode("ascii")) == data
