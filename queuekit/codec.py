"""JSON text of stored jobs: orjson, with the standard library for what orjson cannot do exactly.

Every record is encoded when it is stored and decoded when it is reserved, so the codec sits on
the path of every job; orjson does both several times faster than ``json``. Both write the same
JSON values, so either reads what the other wrote. Integers beyond 64 bits are the exception:
orjson refuses to write them and reads them as floats (losing digits), so text holding a long
run of digits is read by ``json``, which keeps every integer exact.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_bytes", "encode_exact", "loads"]

_std_encode = json.JSONEncoder(separators=(",", ":")).encode
# 19 digits in a row may be an integer beyond what orjson reads exactly (2**63 has 19). Mapping
# every digit to "0" and looking for 19 zeros is one C pass each (a regex costs several times
# more); a false alarm (a long string of digits, a float written with many digits) only means
# the slower, exact parser.
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _has_long_digits(text: bytes | bytearray) -> bool:
    return _LONG_DIGITS in text.translate(_DIGITS_TO_ZERO)


def encode_exact(value: Any) -> bytes | None:
    """orjson's JSON for ``value``, or None when only ``json`` can write it.

    None means reading the text back may not give ``value`` again (non-string keys come back
    as strings): a store that keeps decoded records beside their text should keep what the text
    reads back as.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return None


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON.

    orjson refuses integers beyond 64 bits and non-string keys, which a custom ``to_json`` may
    return; those go through ``json``, which writes them as JSON allows.
    """
    text = encode_exact(value)
    return text if text is not None else _std_encode(value).encode()


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (see ``dumps_bytes``)."""
    text = encode_exact(value)
    return text.decode() if text is not None else _std_encode(value)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON text; raises ``ValueError`` (``json.JSONDecodeError``) for text that is not.

    What orjson rejects is parsed again by ``json``, which also reads the ``NaN`` and
    ``Infinity`` words that ``json.dumps`` writes for a custom payload's special floats.
    """
    if isinstance(text, memoryview):
        text = text.tobytes()
    if _has_long_digits(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except ValueError:
        return json.loads(text)
