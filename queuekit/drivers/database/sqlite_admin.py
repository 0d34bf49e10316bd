"""``SQLiteAdmin``: what ``SQLiteDriver`` offers an operator: stats, failed jobs, purging.

A base class of the driver, so these methods run on its connection thread like every other
statement (``_call``); the hot path (push, reserve, settling a lease) stays in ``sqlite.py``.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ...clock import now
from ...record import JobRecord
from ..base import QueueStats
from .common import ChangeSignal, count_by_queue, decode_failed, select_stats
from .options import DatabaseOptions
from .schema import row_source
from .sqlite_connection import changed_rows, fetch_all
from .sqlite_statements import SQLiteStatements
from .sqlite_thread import READ, STATEMENT, WRITE

__all__ = ["SQLiteAdmin"]

log = logging.getLogger("queuekit.drivers.sqlite")


class SQLiteAdmin:
    """Stats, failed-job management and purging of ``SQLiteDriver`` (one of its bases)."""

    options: DatabaseOptions
    sql: SQLiteStatements
    _changed: ChangeSignal
    _call: Callable[..., Awaitable[Any]]

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        return select_stats(await self._call(READ, self._read_stats), queues)

    def _read_stats(self, conn: sqlite3.Connection) -> QueueStats:
        jobs = conn.execute(self.sql.stats, (now(),) * 5)
        return count_by_queue(jobs, conn.execute(self.sql.failed_stats))

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        if queue is None:
            rows = await self._call(READ, fetch_all, self.sql.failed_list, (limit,))
        else:
            rows = await self._call(READ, fetch_all, self.sql.failed_list_queue, (queue, limit))
        return decode_failed(rows, self.options.failed_table)

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        moved = await self._call(WRITE, self._retry_rows, ids)
        if moved:
            self._changed.notify()
        return moved

    def _retry_rows(self, conn: sqlite3.Connection, ids: Sequence[str] | None) -> int:
        moved = 0
        at = now()
        for seq in self._failed_seqs(conn, ids):
            try:
                conn.execute("SAVEPOINT queuekit_retry")
                conn.execute(self.sql.retry, (at, seq))
            except sqlite3.IntegrityError as e:
                # Its unique key (or id) is pending again: it stays failed, visibly.
                conn.execute("ROLLBACK TO queuekit_retry")
                conn.execute("RELEASE queuekit_retry")
                log.warning(
                    "queuekit: %s was not retried: %s",
                    row_source(self.options.failed_table, seq),
                    e,
                )
                continue
            conn.execute("RELEASE queuekit_retry")
            conn.execute(self.sql.forget_seq, (seq,))
            moved += 1
        return moved

    def _failed_seqs(self, conn: sqlite3.Connection, ids: Sequence[str] | None) -> list[int]:
        if ids is None:
            return [row[0] for row in conn.execute(self.sql.failed_seqs)]
        return [row[0] for i in ids for row in conn.execute(self.sql.failed_seqs_of, (i,))]

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        return await self._call(WRITE, self._forget_rows, ids)

    def _forget_rows(self, conn: sqlite3.Connection, ids: Sequence[str] | None) -> int:
        if ids is None:
            return conn.execute(self.sql.forget_all).rowcount
        return sum(conn.execute(self.sql.forget_id, (i,)).rowcount for i in ids)

    async def purge(self, queue: str) -> int:
        return await self._call(STATEMENT, changed_rows, self.sql.purge, (queue,))
