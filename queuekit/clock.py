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


def _reseed_after_fork() -> None:
    # A forked child must not hand out the ids its parent hands out.
    global _node, _counter
    _node = secrets.randbits(30)
    _counter = itertools.count()


os.register_at_fork(after_in_child=_reseed_after_fork)


def new_id() -> str:
    """A UUIDv7 string: unique across processes and ordered by creation time.

    The 48-bit millisecond timestamp leads, so ids sort by time; within one process a counter
    (not randomness) fills the rest, so ids made in the same millisecond still sort in order.
    """
    ms = time.time_ns() // 1_000_000
    seq = next(_counter)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | ((seq >> 32) & 0xFFF) << 64
        | 0b10 << 62
        | _node << 32
        | (seq & 0xFFFF_FFFF)
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_token() -> str:
    """A fresh, unguessable lease token."""
    return os.urandom(8).hex()
