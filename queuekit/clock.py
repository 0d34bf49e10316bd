"""Time, ids and lease tokens.

One unit for time across the API: float seconds, instants as epoch seconds.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from datetime import timedelta

__all__ = ["new_id", "new_token", "now", "to_seconds"]

now = time.time


def to_seconds(value: float | int | timedelta | None, *, name: str) -> float:
    """Convert a duration given as seconds or ``timedelta`` to float seconds (None means 0).

    Raises ``ValueError`` naming ``name`` for a negative duration, ``TypeError`` for another type.
    """
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise TypeError(
            f"{name} must be seconds (int/float) or a timedelta, got {type(value).__name__}"
        )
    if seconds < 0 or seconds != seconds:
        raise ValueError(f"{name} must be >= 0 seconds, got {value!r}")
    return seconds


_counter = itertools.count()
_node = secrets.randbits(30)


def _node_hex(node: int) -> str:
    # Hex digits 16-23 of an id: the variant bits and the 30-bit node, fixed per process.
    return f"{0b10 << 14 | node >> 16:04x}-{node & 0xFFFF:04x}"


_node_part = _node_hex(_node)
# The first 13 characters of an id ("tttttttt-tttt-7") only change once a millisecond, so the
# newest one is kept rather than formatted again for every id.
_head: tuple[int, str] = (-1, "")


def _reseed_after_fork() -> None:
    # A forked child must not hand out the ids its parent hands out.
    global _node, _node_part, _counter
    _node = secrets.randbits(30)
    _node_part = _node_hex(_node)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> str:
    """A UUIDv7 string: unique across processes and ordered by creation time.

    The 48-bit millisecond timestamp leads, so ids sort by time; within one process a counter
    (not randomness) fills the rest, so ids made in the same millisecond still sort in order.
    Layout: 48-bit ms, version 7, the counter's bits 32-43, variant 0b10, a 30-bit random node
    chosen per process, the counter's low 32 bits.
    """
    global _head
    ms = time.time_ns() // 1_000_000
    seq = next(_counter)
    head_ms, head = _head
    if ms != head_ms:
        head = f"{ms >> 16 & 0xFFFF_FFFF:08x}-{ms & 0xFFFF:04x}-7"
        _head = (ms, head)
    return f"{head}{seq >> 32 & 0xFFF:03x}-{_node_part}{seq & 0xFFFF_FFFF:08x}"


def new_token() -> str:
    """A fresh, unguessable lease token."""
    return os.urandom(8).hex()
