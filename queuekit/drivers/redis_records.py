"""How the Redis driver stores records: their JSON, their place in ``ready`` or ``delayed``, and
the argument layout of a batch (``PUSH_MANY``). Pure functions: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from .. import codec
from ..errors import CorruptStoreError
from ..record import JobRecord
from . import redis_scripts as lua

__all__ = ["Layout", "body", "decode", "layout", "placement", "push_many_args", "text", "unleased"]

# Orders jobs of equal priority and available_at by push; only ties within one microsecond
# need it, and those are only ordered within one process (across processes there is no order).
_push_seq = itertools.count()

#: Per queue: HSET pairs (id, JSON), ready ZADD pairs, delayed ZADD pairs.
Layout = dict[str, tuple[list[Any], list[Any], list[Any]]]


def placement(record: JobRecord, at: float) -> list[str]:
    """-priority, the ready member, and available_at if delayed, else '' (redis_scripts)."""
    available = record.available_at
    member = lua.rank(available, next(_push_seq), record.attempts) + record.id
    return [str(-record.priority), member, repr(available) if available > at else ""]


def body(record: JobRecord) -> bytes:
    """The record's stored form (``JobRecord.to_json``) as UTF-8 JSON: Redis stores the bytes
    as they are, with no text copy. ``PayloadError`` names a record that is not JSON."""
    try:
        return codec.dumps_bytes(record.to_json())
    except (TypeError, ValueError) as e:
        raise record.unstorable(e) from e


def layout(records: Sequence[JobRecord], at: float) -> Layout:
    """``records`` laid out per queue as ``PUSH_MANY`` hands them to HSET and ZADD.

    Raises ``PayloadError`` for a record that cannot be stored, before anything is sent.
    """
    out: Layout = {}
    dumps = codec.dumps_bytes
    record = records[0]
    try:
        for record in records:
            lists = out.get(record.queue)
            if lists is None:
                lists = out[record.queue] = ([], [], [])
            score, member, delay = placement(record, at)
            lists[0].extend((record.id, dumps(record.to_json())))
            if delay:
                lists[2].extend((delay, f"{score}|{member}"))
            else:
                lists[1].extend((score, member))
    except (TypeError, ValueError) as e:
        raise record.unstorable(e) from e
    return out


def push_many_args(batch: Layout, group: Sequence[str]) -> list[Any]:
    """``PUSH_MANY``'s ARGV for the queues of ``group`` (their keys in that order in KEYS)."""
    args: list[Any] = [batch[group[0]][0][0]]
    for i, queue in enumerate(group):
        jobs, ready, delayed = batch[queue]
        args += (i * lua.KEYS_PER_QUEUE, len(jobs) // 2, len(ready) // 2, len(delayed) // 2)
        args += jobs
        args += ready
        args += delayed
    return args


def decode(data: Any, source: Callable[[], str]) -> JobRecord:
    """``JobRecord.loads``; ``source`` names the key and field, built for an error only."""
    try:
        return JobRecord.from_json(codec.loads(data))
    except (ValueError, CorruptStoreError):
        pass  # parsed again below, for the error that names where the record is
    return JobRecord.loads(data, source=source())


def unleased(record: JobRecord) -> JobRecord:
    """A copy of ``record`` as it is stored when nobody holds it."""
    stored = record.copy()
    stored.instance = None
    stored.reserved_until = None
    stored.lease_token = None
    return stored


def text(value: Any) -> str:
    """A reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
