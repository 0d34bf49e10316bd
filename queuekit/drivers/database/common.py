"""Pieces the SQL dialects share: capabilities, lease tokens, wake-ups, decoding rows, counts.

Most serve SQLite and MySQL, whose rows are found by ``seq``. A lease token is
``"<seq>.<random hex>"``: the random part fences off every earlier holder of the row, and the
``seq`` prefix lets extend/complete/release/fail find the row by its primary key.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from ...errors import CorruptStoreError
from ...record import JobRecord
from ..base import Capability, QueueStats
from .schema import JOB_COLUMNS, record_from_row

__all__ = [
    "SQL_CAPABILITIES",
    "ChangeSignal",
    "count_by_queue",
    "decode_failed",
    "decode_leased",
    "empty_counts",
    "fence_of",
    "lease_or_wait",
    "reservation_order",
    "select_stats",
]

log = logging.getLogger("queuekit.drivers.database")

#: What every SQL dialect guarantees; PostgreSQL adds ``BLOCKING_WAIT`` (LISTEN/NOTIFY).
SQL_CAPABILITIES = (
    Capability.PRIORITY
    | Capability.DELAY
    | Capability.ATOMIC_BATCH
    | Capability.PERSISTENT
    | Capability.TRANSACTIONAL
    | Capability.UNIQUE
)


def fence_of(record: JobRecord) -> tuple[int, str] | None:
    """``(seq, token)`` that settling matches, from the ``seq.random`` lease token.

    None for a record that holds no lease of ours (never reserved, or a forged token).
    """
    token = record.lease_token
    if not token:
        return None
    seq, dot, _ = token.partition(".")
    if not dot or not seq.isdigit():
        return None
    return int(seq), token


_PRIORITY = 1 + JOB_COLUMNS.index("priority")
_AVAILABLE_AT = 1 + JOB_COLUMNS.index("available_at")


def reservation_order(row: Sequence[Any]) -> tuple[float, float, int]:
    """Sort key of a ``(seq, *JOB_COLUMNS)`` row: priority desc, available_at, seq.

    A corrupt row may hold text in a number column: it sorts anywhere, it is quarantined anyway.
    """
    priority, available_at = row[_PRIORITY], row[_AVAILABLE_AT]
    return (
        -priority if isinstance(priority, (int, float)) else 0.0,
        available_at if isinstance(available_at, (int, float)) else 0.0,
        row[0],
    )


def decode_leased(
    rows: Sequence[Sequence[Any]], table: str
) -> tuple[list[JobRecord], list[tuple[int, CorruptStoreError]]]:
    """Records from leased ``(seq, *JOB_COLUMNS)`` rows, and ``(seq, error)`` of unreadable ones."""
    records: list[JobRecord] = []
    corrupt: list[tuple[int, CorruptStoreError]] = []
    for row in rows:
        try:
            records.append(record_from_row(row[1:], table))
        except CorruptStoreError as e:
            corrupt.append((row[0], e))
    return records, corrupt


def decode_failed(rows: Sequence[Sequence[Any]], table: str) -> list[JobRecord]:
    """Failed records from ``FAILED_COLUMNS`` rows; an unreadable row is skipped loudly.

    It is never deleted: ``forget_failed([id])`` removes it once a person has looked at it.
    """
    records = []
    for row in rows:
        try:
            records.append(record_from_row(row, table, failed=True))
        except CorruptStoreError as e:
            log.error("queuekit: skipped an unreadable failed job: %s", e)
    return records


def empty_counts() -> dict[str, int]:
    """The stats of a queue with nothing in it."""
    return {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0}


def count_by_queue(jobs: Iterable[Sequence[Any]], failed: Iterable[Sequence[Any]]) -> QueueStats:
    """Stats from ``(queue, pending, delayed, reserved)`` and ``(queue, failed)`` count rows."""
    out: QueueStats = {}
    for queue, pending, delayed, reserved in jobs:
        out[queue] = {
            "pending": int(pending or 0),
            "delayed": int(delayed or 0),
            "reserved": int(reserved or 0),
            "failed": 0,
        }
    for queue, count in failed:
        out.setdefault(queue, empty_counts())["failed"] = int(count)
    return out


def select_stats(counts: QueueStats, queues: Sequence[str] | None) -> QueueStats:
    """``counts`` narrowed to ``queues`` (every queue when None), zeros for unknown ones."""
    if queues is None:
        return counts
    return {q: counts.get(q, empty_counts()) for q in queues}


class ChangeSignal:
    """Wakes ``reserve`` calls waiting in this process when this process stores work.

    Work stored by other processes is found by polling; this only saves the poll interval for
    jobs dispatched (or released, or retried) by the process that also runs the worker. Stores
    may signal from any thread (``dispatch_sync`` runs on a portal loop).
    """

    def __init__(self) -> None:
        self._changes = 0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    @property
    def seen(self) -> int:
        """A counter to hand to ``wait`` after looking for work."""
        return self._changes

    def notify(self) -> None:
        """Work was stored: wake every waiter."""
        with self._lock:
            self._changes += 1
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, seen: int, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, less if work is stored after ``seen`` was read."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._changes != seen:
                return  # work arrived between the caller's look and now: look again at once
            self._waiters.append((loop, fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            pass
        finally:
            if not fut.done():
                fut.cancel()
                with self._lock:
                    self._waiters = [w for w in self._waiters if w[1] is not fut]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def lease_or_wait(
    take: Callable[[], Awaitable[tuple[list[JobRecord], list[str]]]],
    changed: ChangeSignal,
    *,
    wait: float,
    poll_interval: float,
    failed_table: str,
) -> list[JobRecord]:
    """Call ``take`` until it leases jobs or ``wait`` seconds pass; ``[]`` if none came.

    ``take`` runs one reservation transaction and returns the leased records and the sources of
    unreadable rows it moved to ``failed_table``. Between tries it sleeps up to
    ``poll_interval``, less when this process stores work.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        seen = changed.seen
        records, corrupt = await take()
        if corrupt:
            # Raised after the commit, so the unreadable rows are already safe in the failed
            # table and the next reservation hands out the readable jobs.
            raise CorruptStoreError(
                f"{'; '.join(corrupt)}; moved to table {failed_table!r} with the error, "
                "the other jobs are untouched"
            )
        if records:
            return records
        remaining = deadline - loop.time()
        if remaining <= 0:
            return []
        await changed.wait(seen, min(remaining, poll_interval))
