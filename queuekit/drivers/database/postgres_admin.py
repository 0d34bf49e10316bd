"""``PostgresAdmin``: what ``PostgresDriver`` offers an operator: stats, failed jobs, purging.

A base class of the driver, using its pool (``_db``); each is one statement from
``postgres_sql``. The hot path (push, reserve, settling a lease) stays in ``postgres.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ...clock import now
from ...errors import CorruptStoreError
from ...record import JobRecord
from ..base import QueueStats
from .common import empty_counts
from .postgres_connections import PostgresConnections
from .postgres_sql import PostgresStatements
from .schema import record_from_row

__all__ = ["PostgresAdmin"]

log = logging.getLogger("queuekit.database.postgres")


class PostgresAdmin:
    """Stats, failed-job management and purging of ``PostgresDriver`` (one of its bases)."""

    sql: PostgresStatements
    failed_table: str
    _db: PostgresConnections
    _channel: str

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        """Counts per queue: ``pending`` (due now), ``delayed``, ``reserved``, ``failed``."""
        params: dict[str, Any] = {"now": now()}
        if queues is None:
            rows = await self._db.fetch("count jobs", self.sql.stats_all, params)
            out: QueueStats = {}
        else:
            params["queues"] = list(queues)
            rows = await self._db.fetch("count jobs", self.sql.stats_queues, params)
            out = {q: empty_counts() for q in queues}
        for queue, pending, delayed, reserved, failed in rows:
            counts = out.setdefault(queue, empty_counts())
            counts["pending"] += pending
            counts["delayed"] += delayed
            counts["reserved"] += reserved
            counts["failed"] += failed
        return out

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Failed jobs, oldest failure first, at most ``limit``; unreadable rows are logged."""
        if queue is None:
            query, params = self.sql.failed_all, {"limit": limit}
        else:
            query, params = self.sql.failed_queue, {"limit": limit, "queue": queue}
        rows = await self._db.fetch("list failed jobs", query, params)
        records = []
        for row in rows:
            try:
                records.append(record_from_row(row, self.failed_table, failed=True))
            except CorruptStoreError as e:
                # One unreadable row must not hide every other failed job.
                log.error(
                    "queuekit: %s (skipped; inspect it with SQL, forget_failed removes it)", e
                )
        return records

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs (all when ``ids`` is None) back as new; returns how many moved.

        A job whose ``unique_key`` is held by a pending job stays in the failed table.
        """
        params: dict[str, Any] = {"now": now(), "channel": self._channel}
        if ids is None:
            query = self.sql.retry_all
        else:
            if not ids:
                return 0
            query, params["ids"] = self.sql.retry_ids, list(ids)
        rows = await self._db.fetch("retry failed jobs", query, params)
        return int(rows[0][0])

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        """Delete failed jobs (all when ``ids`` is None); returns how many were deleted."""
        if ids is None:
            return await self._db.execute("forget failed jobs", self.sql.forget_all, {})
        if not ids:
            return 0
        return await self._db.execute("forget failed jobs", self.sql.forget_ids, {"ids": list(ids)})

    async def purge(self, queue: str) -> int:
        """Delete every pending and delayed job of ``queue``; running jobs are left alone."""
        return await self._db.execute("purge", self.sql.purge, {"queue": queue, "now": now()})
