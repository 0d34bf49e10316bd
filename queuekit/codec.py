"""JSON text of stored jobs: orjson, with the standard library for what orjson refuses.

Every record is encoded when it is stored and decoded when it is reserved, so the codec sits on
the path of every job; orjson does both several times faster than ``json``. Both write the same
JSON values, so either reads what the other wrote.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps", "dumps_bytes", "loads"]

_std_encode = json.JSONEncoder(separators=(",", ":")).encode


def dumps_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON.

    orjson refuses integers beyond 64 bits and non-string keys, which a custom ``to_json`` may
    return; those go through ``json``, which writes them as JSON allows.
    """
    try:
        return orjson.dumps(value)
    except TypeError:
        return _std_encode(value).encode()


def dumps(value: Any) -> str:
    """``value`` as compact JSON text (see ``dumps_bytes``)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return _std_encode(value)


def loads(text: str | bytes | bytearray | memoryview) -> Any:
    """Parse JSON text; raises ``ValueError`` (``json.JSONDecodeError``) for text that is not.

    What orjson rejects is parsed again by ``json``, which also reads the ``NaN`` and
    ``Infinity`` words that ``json.dumps`` writes for a custom payload's special floats.
    """
    try:
        return orjson.loads(text)
    except ValueError:
        if isinstance(text, memoryview):
            text = text.tobytes()
        return json.loads(text)
