"""``FileDriver``: a durable queue in plain files, shared safely by many processes.

Each operation appends one JSON line to a journal (O(1)); when the journal grows past
``max_file_size`` it is compacted into a readable snapshot ``{"jobs": [...], "failed": [...]}``
written atomically, the previous snapshots kept as ``jobs.json.1`` ... ``jobs.json.N``. Every
process keeps the whole store in memory and, under a file lock, applies what other processes
appended before it writes. All file work runs on one thread per driver, so the event loop
never waits on the disk; operations that arrive together share one lock, one write and one
fsync.

The parts, one module each: ``file_replica`` (the jobs in memory and the index that picks the
next one), ``file_operations`` (what each operation decides and writes, under the lock),
``file_io`` (the I/O thread and its group commit), ``file_store`` (the lock, following the
journal, compaction), ``file_tail`` (appending to the journal, its preallocated room),
``file_journal`` and ``file_snapshot`` (the on-disk formats, backups), ``file_recovery``
(loading, and recovering from damaged files).

Config section ``queue.file``::

    {"path": "storage/queue/jobs.json", "max_file_size": 5242880, "max_backups": 5,
     "retry_after": 90, "fsync": true, "poll_interval": 0.05, "max_poll_interval": 0.5}
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..clock import now
from ..config import parse_options
from ..errors import DriverError
from ..record import JobRecord
from .base import Capability, QueueDriver, QueueStats
from .file_io import IOThread, wake
from .file_operations import Operations
from .file_replica import MemoryReplica
from .file_store import JournalStore

__all__ = ["FileDriver", "FileOptions"]


class FileOptions(BaseModel):
    """The ``queue.file`` section; sizes in bytes, durations in seconds.

    ``fsync`` true makes every write durable before the call returns (power-cut safe); false
    leaves flushing to the operating system (safe against a crash of the process only).
    ``poll_interval`` is the first pause of an idle ``reserve(wait=...)``; it grows while idle
    up to ``max_poll_interval``.
    """

    model_config = ConfigDict(extra="forbid")

    path: str = Field("storage/queue/jobs.json", min_length=1)
    max_file_size: int = Field(5_242_880, ge=1024)
    max_backups: int = Field(5, ge=0)
    retry_after: float = Field(90.0, gt=0)
    fsync: bool = True
    poll_interval: float = Field(0.05, gt=0)
    max_poll_interval: float = Field(0.5, gt=0)


_forks = 0  # how many times this process was forked from its parent


def _forked() -> None:
    global _forks
    _forks += 1


if hasattr(os, "register_at_fork"):
    # Counts forks instead of asking the kernel for the pid on every call.
    os.register_at_fork(after_in_child=_forked)


class FileDriver(QueueDriver):
    """Jobs in a journal and snapshot on disk; durable, shared by every process on the machine.

    Example::

        driver = FileDriver({"path": "storage/queue/jobs.json", "fsync": True})
        await driver.connect()

    or by config: ``QueueManager({"queue": {"driver": "file", "file": {"path": ...}}})``.
    ``reserve(wait=...)`` polls (files cannot wake a waiter), starting at ``poll_interval`` and
    backing off while idle; a push through the same driver wakes its own waiters at once.
    """

    name = "file"
    capabilities = (
        Capability.PRIORITY
        | Capability.DELAY
        | Capability.ATOMIC_BATCH
        | Capability.PERSISTENT
        | Capability.UNIQUE
    )

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        self.options = parse_options(FileOptions, options or {}, "queue.file")
        self.default_lease = self.options.retry_after
        self.path = Path(self.options.path).absolute()
        self._store = JournalStore(
            self.path,
            max_file_size=self.options.max_file_size,
            max_backups=self.options.max_backups,
            fsync=self.options.fsync,
        )
        self._replica = MemoryReplica()
        self._io: IOThread | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._ops = Operations(self._replica, self._store, [])
        self._pid = os.getpid()
        self._forks = _forks
        self._poll = self.options.poll_interval
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def problems(self) -> list[str]:
        """What recovery found wrong when the store was last loaded (empty when all was well)."""
        return list(self._store.problems)

    async def connect(self) -> None:
        if self._io is not None:
            return
        self._pid, self._forks = os.getpid(), _forks
        self._io = IOThread(self._store, self._replica)
        self._ops = Operations(self._replica, self._store, self._io.lines)
        # Stop the thread if the driver is dropped without close().
        self._finalizer = weakref.finalize(self, self._io.abandon)
        try:
            await self._call(self._store.open, self._replica, locked=False)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        io, self._io = self._io, None
        if io is None:
            return
        if self._finalizer is not None:
            self._finalizer.detach()
        try:
            await io.call(self._store.close, locked=False, durable=False)
        finally:
            io.stop()
            await io.join(10.0)

    async def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        locked: bool = True,
        durable: bool = True,
        skip: Callable[[], bool] | None = None,
        empty: Any = None,
    ) -> Any:
        io = self._io
        if io is None:
            raise DriverError(f"file queue {self.path}: not connected (call connect() first)")
        if _forks != self._forks:
            raise DriverError(
                f"file queue {self.path}: this driver was connected in process {self._pid}; "
                "create and connect a driver in each process"
            )
        return await io.call(fn, *args, locked=locked, durable=durable, skip=skip, empty=empty)

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        # Always through the I/O thread: even an unsynced write can stall on writeback, and the
        # event loop must never wait for the disk.
        stored = await self._call(self._ops.push, [record], False)
        if stored:
            self._notify()
        return bool(stored)

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        if records:
            # One journal line for the whole batch: it is appended whole or not at all.
            await self._call(self._ops.push, list(records), True)
            self._notify()

    # -- reserving -------------------------------------------------------------------------

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        names = None if queues is None else list(queues)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait

        def nothing_due() -> bool:
            # Skips the lock while no process wrote and nothing here fell due: idle polls
            # cost one stat.
            return self._store.unchanged() and not self._replica.has_due(names, now())

        while True:
            records: list[JobRecord] = await self._call(
                self._ops.reserve, names, lease, limit, durable=False, skip=nothing_due, empty=[]
            )
            if records:
                self._poll = self.options.poll_interval
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._idle(min(self._poll, remaining))
            self._poll = min(self._poll * 1.5, self.options.max_poll_interval)

    async def _idle(self, seconds: float) -> None:
        """Sleep until the next poll, or until a push through this driver wakes us."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(seconds):
                await future
        except TimeoutError:
            pass
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):  # already taken by _notify
                self._waiters.remove(waiter)

    def _notify(self) -> None:
        self._poll = self.options.poll_interval
        if not self._waiters:
            return
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake, future)

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        # Not fsynced: a lease lost in a power cut only makes the job run again.
        until = await self._call(
            self._ops.extend, record.id, record.lease_token, lease, durable=False
        )
        if until is None:
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        return (await self.complete_many([record]))[0]

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        pairs = [(r.id, r.lease_token) for r in records]
        return await self._call(self._ops.complete, pairs) if pairs else []

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """Complete ``record`` and lease the next jobs in one call to the I/O thread: one lock,
        one append and, with ``fsync: true``, one fsync for both (the completion is durable
        before it returns; the reservation rides along)."""
        names = None if queues is None else list(queues)
        pair = (record.id, record.lease_token)
        completed, records = await self._call(
            self._ops.complete_and_reserve, pair, names, lease, limit
        )
        if records or limit <= 0 or wait <= 0:
            return completed, records
        return completed, await self.reserve_many(names, lease=lease, limit=limit, wait=wait)

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        args = (record.id, record.lease_token, record.attempts, delay, error)
        released = bool(await self._call(self._ops.release, *args))
        if released:
            self._notify()
        return released

    async def fail(self, record: JobRecord, error: str) -> bool:
        return bool(await self._call(self._ops.fail, record.id, record.lease_token, error))

    # -- inspecting and managing -----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        names = None if queues is None else list(queues)
        # Reads write nothing, so they never wait for an fsync (durable=False).
        return await self._call(self._ops.stats, names, durable=False)

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        return await self._call(self._ops.failed, queue, limit, durable=False)

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        moved = await self._call(self._ops.retry, None if ids is None else list(ids))
        if moved:
            self._notify()
        return int(moved)

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        return int(await self._call(self._ops.forget, None if ids is None else list(ids)))

    async def purge(self, queue: str) -> int:
        return int(await self._call(self._ops.purge, queue))

    async def compact(self) -> None:
        """Compact the journal into a new snapshot now (rotating backups), whatever its size."""
        await self._call(self._ops.compact)
