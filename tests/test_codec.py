"""The JSON codec of stored jobs: orjson, with the standard library for what orjson refuses."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from queuekit import codec

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_both_codecs_read_what_the_other_wrote(value: object) -> None:
    assert codec.loads(codec.dumps(value)) == value
    assert codec.loads(codec.dumps_bytes(value)) == value
    assert json.loads(codec.dumps(value)) == value
    assert codec.loads(json.dumps(value)) == value


def test_what_orjson_refuses_is_written_by_json() -> None:
    value = {"big": 2**70, "keys": {1: "one"}}
    assert codec.loads(codec.dumps(value)) == {"big": 2**70, "keys": {"1": "one"}}
    assert codec.loads(codec.dumps_bytes(value)) == {"big": 2**70, "keys": {"1": "one"}}


@pytest.mark.parametrize("n", [2**63, 2**64 + 1, -(2**70) - 3, 10**40 + 7])
def test_integers_beyond_64_bits_come_back_exact(n: int) -> None:
    for text in (codec.dumps({"n": n}), codec.dumps_bytes({"n": n}), json.dumps({"n": n})):
        value = codec.loads(text)["n"]
        assert value == n and isinstance(value, int)


def test_digits_in_strings_and_long_floats_are_read_as_written() -> None:
    value = {"card": "12345678901234567890123", "x": 0.12345678901234568}
    assert codec.loads(codec.dumps(value)) == value
    assert codec.encode_exact({1: "a"}) is None and codec.encode_exact({"a": 1}) == b'{"a":1}'


def test_special_floats_written_by_json_are_read() -> None:
    value = codec.loads('{"a": NaN, "b": Infinity}')
    assert math.isnan(value["a"]) and value["b"] == math.inf


@pytest.mark.parametrize("text", ["", "{", '{"a": 1,}', "nope", b"\xff\xfe", memoryview(b"[1,")])
def test_text_that_is_not_json_raises_value_error(text: str | bytes | memoryview) -> None:
    with pytest.raises(ValueError):
        codec.loads(text)


def test_memoryview_and_bytes_are_read() -> None:
    assert codec.loads(memoryview(b'{"a":[1,2]}')) == {"a": [1, 2]}
    assert codec.loads(bytearray(b'"x"')) == "x"
