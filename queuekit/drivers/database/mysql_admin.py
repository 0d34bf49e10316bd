"""``MySQLAdmin``: what ``MySQLDriver`` offers an operator: stats, failed jobs, purging.

Also ``drop_tables``, which tests and benchmarks use to clean up after themselves.

A base class of the driver, using its pool (``_db``); the hot path (push, reserve, settling a
lease) stays in ``mysql.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiomysql

from ...clock import now
from ...errors import DriverError
from ...record import JobRecord
from ..base import QueueStats
from .common import ChangeSignal, count_by_queue, decode_failed, select_stats
from .mysql_connection import MySQLPool, TransactionCursor, connect_kwargs, queue_label
from .mysql_statements import MySQLStatements
from .options import DatabaseOptions

__all__ = ["MySQLAdmin", "drop_tables"]

log = logging.getLogger("queuekit.drivers.mysql")


class MySQLAdmin:
    """Stats, failed-job management and purging of ``MySQLDriver`` (one of its bases)."""

    options: DatabaseOptions
    sql: MySQLStatements
    _db: MySQLPool
    _changed: ChangeSignal
    _fenced: Callable[[str, Sequence[Any]], Awaitable[int]]

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        async def body(cur: aiomysql.Cursor) -> QueueStats:
            await cur.execute(self.sql.stats, (now(),) * 5)
            jobs = await cur.fetchall()
            await cur.execute(self.sql.failed_stats)
            return count_by_queue(jobs, await cur.fetchall())

        return select_stats(await self._db.autocommit(body), queues)

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        async def body(cur: aiomysql.Cursor) -> list[Any]:
            if queue is None:
                await cur.execute(self.sql.failed_list, (limit,))
            else:
                await cur.execute(self.sql.failed_list_queue, (queue, limit))
            return list(await cur.fetchall())

        return decode_failed(await self._db.autocommit(body), self.options.failed_table)

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0

        async def body(cur: TransactionCursor) -> int:
            if ids is None:
                await cur.execute(self.sql.lock_failed_all)
            else:
                await cur.execute(self.sql.lock_failed(len(ids)), list(ids))
            moved = 0
            at = now()
            for (seq,) in await cur.fetchall():
                try:
                    await cur.execute(self.sql.retry, (at, seq))
                except aiomysql.IntegrityError as e:
                    # Its unique key is pending again: it stays failed, visibly. (InnoDB undid
                    # only the failed statement, the transaction goes on.)
                    log.warning("queuekit: failed job row %s was not retried: %s", seq, e)
                    continue
                await cur.execute(self.sql.forget_seq, (seq,))
                moved += 1
            return moved

        moved = await self._db.transaction(body)
        if moved:
            self._changed.notify()
        return moved

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        if ids is not None and not ids:
            return 0

        async def body(cur: aiomysql.Cursor) -> int:
            if ids is None:
                await cur.execute(self.sql.forget_all)
            else:
                await cur.execute(self.sql.forget(len(ids)), list(ids))
            return int(cur.rowcount)

        return await self._db.autocommit(body)

    async def purge(self, queue: str) -> int:
        return await self._fenced(self.sql.purge, (queue,))


async def drop_tables(options: dict[str, Any] | DatabaseOptions) -> None:
    """Drop the two tables of ``options`` and their schema rows (tests and benchmarks use it)."""
    options = DatabaseOptions.parse(options)
    kwargs = connect_kwargs(options)
    sql = MySQLStatements(kwargs["db"], options.table, options.failed_table)
    try:
        pool = await aiomysql.create_pool(minsize=1, maxsize=1, **kwargs)
    except (aiomysql.Error, OSError) as e:
        raise DriverError(f"{queue_label(kwargs, options.table)}: cannot connect: {e}") from e
    try:
        async with pool.acquire() as conn, conn.cursor() as cur:
            for statement in sql.drop:
                await cur.execute(statement)
            await cur.execute(
                "SELECT COUNT(*) FROM information_schema.tables "
                "WHERE table_schema = %s AND table_name = %s",
                (kwargs["db"], "queuekit_schema"),
            )
            row = await cur.fetchone()
            if row and row[0]:
                await cur.execute(sql.forget_version, (options.table, options.failed_table))
    finally:
        pool.close()
        await pool.wait_closed()
