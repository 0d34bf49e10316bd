"""``MemoryDriver``: an in-process queue for development and tests.

Fast and simple, and everything is lost when the process ends. It keeps the dispatched job object
itself (no serialization), so a test can read state a job set on itself.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..clock import new_token, now
from ..config import parse_options
from ..errors import DuplicateJobError
from ..record import JobRecord
from .base import Capability, QueueDriver, QueueStats

__all__ = ["MemoryDriver"]

_ReadyEntry = tuple[int, float, int, JobRecord]  # (-priority, available_at, seq, record)
_DelayedEntry = tuple[float, int, JobRecord]  # (available_at, seq, record)


class MemoryOptions(BaseModel):
    """Options of the ``memory`` and ``sync`` drivers."""

    model_config = ConfigDict(extra="forbid")

    #: Seconds a reserved job stays leased before another worker may take it.
    retry_after: float = Field(90.0, gt=0)


class MemoryDriver(QueueDriver):
    """In-process driver: priority, delays, leases and a failed store, all in dicts and heaps.

    Order is priority, then ``available_at``, then dispatch order. A waiting ``reserve`` wakes at
    once on ``push``, also when the push comes from another thread (``dispatch_sync``).

    Options: ``retry_after`` (lease seconds, default 90).
    """

    name = "memory"
    keeps_instances = True
    capabilities = (
        Capability.PRIORITY
        | Capability.DELAY
        | Capability.ATOMIC_BATCH
        | Capability.BLOCKING_WAIT
        | Capability.UNIQUE
    )

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        parsed = parse_options(MemoryOptions, options or {}, f"queue.{self.name}")
        self.default_lease = parsed.retry_after
        # One lock for all state: pushes may come from other threads (dispatch_sync).
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._ready: dict[str, list[_ReadyEntry]] = {}
        self._delayed: dict[str, list[_DelayedEntry]] = {}
        self._reserved: dict[str, tuple[str, JobRecord]] = {}
        self._leases: list[tuple[float, str, str]] = []  # (reserved_until, id, token)
        self._failed: dict[str, JobRecord] = {}
        self._unique: dict[str, str] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # -- storing ---------------------------------------------------------------------------

    def _insert(self, record: JobRecord, at: float) -> None:
        seq = next(self._seq)
        if record.available_at > at:
            heapq.heappush(
                self._delayed.setdefault(record.queue, []), (record.available_at, seq, record)
            )
        else:
            heapq.heappush(
                self._ready.setdefault(record.queue, []),
                (-record.priority, record.available_at, seq, record),
            )

    async def push(self, record: JobRecord, **options: Any) -> bool:
        with self._lock:
            if record.unique_key is not None:
                if record.unique_key in self._unique:
                    return False
                self._unique[record.unique_key] = record.id
            self._insert(record, now())
        self._wake()
        return True

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        with self._lock:
            # Check every unique key before storing anything: the batch is all or nothing.
            keys = [r.unique_key for r in records if r.unique_key is not None]
            if len(set(keys)) != len(keys) or any(k in self._unique for k in keys):
                raise DuplicateJobError("batch holds a unique job that is already pending")
            at = now()
            for record in records:
                if record.unique_key is not None:
                    self._unique[record.unique_key] = record.id
                self._insert(record, at)
        self._wake()

    # -- waking ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if not self._waiters:
            return
        with self._lock:
            waiters, self._waiters = self._waiters, []
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, fut in waiters:
            if loop is current:
                if not fut.done():
                    fut.set_result(None)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)

    def _next_due(self) -> float | None:
        """The earliest instant a delayed job or an expired lease makes work appear."""
        times = [heap[0][0] for heap in self._delayed.values() if heap]
        if self._leases:
            times.append(self._leases[0][0])
        return min(times) if times else None

    # -- reserving -------------------------------------------------------------------------

    def _reclaim_expired(self, at: float) -> None:
        while self._leases and self._leases[0][0] <= at:
            _, job_id, token = heapq.heappop(self._leases)
            entry = self._reserved.get(job_id)
            if entry is None or entry[0] != token:
                continue  # already acked, or re-leased since: the heap entry is stale
            until = entry[1].reserved_until
            if until is not None and until > at:
                continue  # extended since: a later heap entry carries the new deadline
            del self._reserved[job_id]
            # A copy goes back in the queue, so the dead holder's record keeps its old token and
            # its late complete()/fail() is refused by the fence.
            record = entry[1].copy()
            record.reserved_until = None
            record.lease_token = None
            self._insert(record, at)

    def _promote_due(self, queue: str, at: float) -> None:
        delayed = self._delayed.get(queue)
        while delayed and delayed[0][0] <= at:
            _, _, record = heapq.heappop(delayed)
            heapq.heappush(
                self._ready.setdefault(queue, []),
                (-record.priority, record.available_at, next(self._seq), record),
            )

    def _take(self, queues: Sequence[str] | None, lease: float) -> JobRecord | None:
        at = now()
        self._reclaim_expired(at)
        names = list(queues) if queues is not None else list({*self._ready, *self._delayed})
        for queue in names:
            self._promote_due(queue, at)
        best: list[_ReadyEntry] | None = None
        if queues is not None:
            best = next((self._ready[q] for q in names if self._ready.get(q)), None)
        else:
            for q in names:
                heap = self._ready.get(q)
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
        if best is None:
            return None
        record = heapq.heappop(best)[3]
        record.attempts += 1
        record.lease_token = token = new_token()
        record.reserved_until = until = at + lease
        self._reserved[record.id] = (token, record)
        heapq.heappush(self._leases, (until, record.id, token))
        return record

    async def reserve(
        self, queues: Sequence[str] | None, *, lease: float, wait: float = 0.0
    ) -> JobRecord | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            with self._lock:
                record = self._take(queues, lease)
                if record is not None:
                    return record
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                due = self._next_due()
                if due is not None:
                    remaining = min(remaining, max(due - now(), 0.001))
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, fut))
            try:
                async with asyncio.timeout(remaining):
                    await fut
            except TimeoutError:
                pass
            finally:
                if not fut.done():
                    fut.cancel()

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        first = await self.reserve(queues, lease=lease, wait=wait)
        if first is None:
            return []
        records = [first]
        with self._lock:
            while len(records) < limit and (record := self._take(queues, lease)) is not None:
                records.append(record)
        return records

    # -- settling a lease ------------------------------------------------------------------

    def _settle(self, record: JobRecord) -> JobRecord | None:
        """Remove and return the stored record if ``record`` still holds its lease."""
        entry = self._reserved.get(record.id)
        if entry is None or entry[0] != record.lease_token:
            return None
        del self._reserved[record.id]
        return entry[1]

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        with self._lock:
            entry = self._reserved.get(record.id)
            if entry is None or entry[0] != record.lease_token:
                return False
            until = now() + lease
            entry[1].reserved_until = until
            record.reserved_until = until
            heapq.heappush(self._leases, (until, record.id, entry[0]))
            return True

    async def complete(self, record: JobRecord) -> bool:
        with self._lock:
            return self._complete(record)

    def _complete(self, record: JobRecord) -> bool:
        stored = self._settle(record)
        if stored is None:
            return False
        if stored.unique_key is not None:
            self._unique.pop(stored.unique_key, None)
        return True

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """Complete ``record`` and take the next jobs under one acquisition of the lock."""
        records: list[JobRecord] = []
        with self._lock:
            completed = self._complete(record)
            while len(records) < limit and (taken := self._take(queues, lease)) is not None:
                records.append(taken)
        if records or limit <= 0 or wait <= 0:
            return completed, records
        return completed, await self.reserve_many(queues, lease=lease, limit=limit, wait=wait)

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        with self._lock:
            stored = self._settle(record)
            if stored is None:
                return False
            at = now()
            stored.attempts = record.attempts
            if error is not None:
                stored.last_error = error
            stored.available_at = at + delay
            stored.reserved_until = None
            stored.lease_token = None
            self._insert(stored, at)
        self._wake()
        return True

    async def fail(self, record: JobRecord, error: str) -> bool:
        with self._lock:
            stored = self._settle(record)
            if stored is None:
                return False
            stored.last_error = error
            stored.failed_at = now()
            stored.reserved_until = None
            stored.lease_token = None
            self._failed[stored.id] = stored
            if stored.unique_key is not None:
                self._unique.pop(stored.unique_key, None)
            return True

    # -- inspecting and managing -----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        with self._lock:
            at = now()
            names = (
                set(queues)
                if queues is not None
                else {
                    *self._ready,
                    *self._delayed,
                    *(r.queue for _, r in self._reserved.values()),
                    *(r.queue for r in self._failed.values()),
                }
            )
            out = {q: {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0} for q in names}
            for q in names:
                due = sum(1 for e in self._delayed.get(q, ()) if e[0] <= at)
                out[q]["pending"] = len(self._ready.get(q, ())) + due
                out[q]["delayed"] = len(self._delayed.get(q, ())) - due
            for _, record in self._reserved.values():
                if record.queue in out:
                    # A lease that ran out counts as pending: the next reservation takes it.
                    live = (record.reserved_until or 0.0) > at
                    out[record.queue]["reserved" if live else "pending"] += 1
            for record in self._failed.values():
                if record.queue in out:
                    out[record.queue]["failed"] += 1
            return out

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        with self._lock:
            records = [r for r in self._failed.values() if queue is None or r.queue == queue]
        records.sort(key=lambda r: (r.failed_at or 0.0, r.id))
        return [r.copy() for r in records[:limit]]

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        with self._lock:
            chosen = [
                job_id
                for job_id in (list(self._failed) if ids is None else ids)
                if job_id in self._failed
                # A job whose unique key is pending again stays failed: retrying it would
                # run the same unique work twice.
                and self._failed[job_id].unique_key not in self._unique
            ]
            at = now()
            for job_id in chosen:
                record = self._failed.pop(job_id)
                record.attempts = 0
                record.failed_at = None
                record.available_at = at
                if record.unique_key is not None:
                    self._unique[record.unique_key] = record.id
                self._insert(record, at)
        if chosen:
            self._wake()
        return len(chosen)

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        with self._lock:
            if ids is None:
                count = len(self._failed)
                self._failed.clear()
                return count
            return sum(1 for i in ids if self._failed.pop(i, None) is not None)

    async def purge(self, queue: str) -> int:
        with self._lock:
            ready = self._ready.pop(queue, [])
            delayed = self._delayed.pop(queue, [])
            for entry in ready:
                self._forget_unique(entry[3])
            for entry in delayed:
                self._forget_unique(entry[2])
            return len(ready) + len(delayed)

    def _forget_unique(self, record: JobRecord) -> None:
        if record.unique_key is not None:
            self._unique.pop(record.unique_key, None)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
