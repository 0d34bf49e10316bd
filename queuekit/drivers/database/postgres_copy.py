"""Rows of the PostgreSQL dialect, and batches written with one binary COPY.

COPY is the fastest way for many rows into PostgreSQL: in binary, psycopg's C code encodes every
value and the server parses no text. One COPY is one statement, so on a connection in autocommit
it is its own transaction (every row commits or none does), and inside an open transaction it
stands or falls with it. COPY keeps row order, so the table's ``seq`` follows the batch order.

Rows go out in chunks while the next ones are encoded, so the server stores the first rows while
the client still encodes the last: on the driver's own connections ``copy_rows`` takes the rows
lazily and the encoding of a batch costs next to no time of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg

from ...record import JobRecord
from .postgres_sql import COPY_TYPES

__all__ = ["copy_rows", "copy_rows_sync", "due_queues"]


def due_queues(records: Sequence[JobRecord], at: float) -> list[str]:
    """The queues (sorted, each once) of ``records`` due at ``at``: the ones to NOTIFY.

    A delayed job wakes nobody: idle workers would only find it not yet due.
    """
    return sorted({r.queue for r in records if r.available_at <= at})


async def copy_rows(
    conn: psycopg.AsyncConnection[Any], statement: bytes, rows: Iterable[tuple[Any, ...]]
) -> None:
    """COPY ``rows`` (in ``JOB_COLUMNS`` order) in binary, in whatever transaction ``conn`` is in.

    ``rows`` may be lazy: an error raised while it yields one (a ``PayloadError``) cancels the
    COPY, which then stores nothing, and propagates unchanged.
    """
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(COPY_TYPES)
        write_row = copy.write_row
        for row in rows:
            await write_row(row)


def copy_rows_sync(
    conn: psycopg.Connection[Any], statement: bytes, rows: Iterable[tuple[Any, ...]]
) -> None:
    """``copy_rows`` on a blocking connection (run it in a thread)."""
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(COPY_TYPES)
        for row in rows:
            copy.write_row(row)
