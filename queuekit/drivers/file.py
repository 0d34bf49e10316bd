"""``FileDriver``: a durable queue in plain files, shared safely by many processes.

Each operation appends one JSON line to a journal (O(1)); when the journal grows past
``max_file_size`` it is compacted into a readable snapshot ``{"jobs": [...], "failed": [...]}``
written atomically, the previous snapshots kept as ``jobs.json.1`` ... ``jobs.json.N``. Every
process keeps the whole store in memory and, under a file lock, applies what other processes
appended before it writes (see ``file_store``). All file work runs on one thread per driver, so
the event loop never waits on the disk; operations that arrive together share one lock, one
write and one fsync.

Config section ``queue.file``::

    {"path": "storage/queue/jobs.json", "max_file_size": 5242880, "max_backups": 5,
     "retry_after": 90, "fsync": true, "poll_interval": 0.05, "max_poll_interval": 0.5}
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
import os
import weakref
from collections.abc import Callable, Sequence
from operator import attrgetter
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..clock import new_token, now
from ..config import parse_options
from ..errors import DriverError, DuplicateJobError
from ..record import JobRecord
from .base import Capability, QueueDriver, QueueStats
from .file_store import IOThread, JournalStore, wake

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


class _Entry:
    """A stored job and its place in the order; ``ver`` changes with every state change, so
    heap entries made before it are recognised as stale."""

    __slots__ = ("record", "seq", "ver")

    def __init__(self, record: JobRecord, seq: int) -> None:
        self.record = record
        self.seq = seq
        self.ver = 0


class _Replica:
    """The whole store in memory, changed only by applying journal operations.

    Applying the same operations in the same order gives the same jobs in every process; the
    heaps are this process's own index over them (rebuilt lazily, checked by ``ver``).
    """

    def __init__(self) -> None:
        self.reset([], [])

    def reset(self, jobs: list[JobRecord], failed: list[JobRecord]) -> None:
        self.jobs: dict[str, _Entry] = {}
        self.failed: dict[str, JobRecord] = {r.id: r for r in failed}
        self.unique: dict[str, str] = {}
        # (-priority, available_at, seq, ver, id) and (available_at, seq, ver, id) per queue
        self._ready: dict[str, list[tuple[int, float, int, int, str]]] = {}
        self._delayed: dict[str, list[tuple[float, int, int, str]]] = {}
        self._leases: list[tuple[float, int, str]] = []  # (reserved_until, ver, id)
        self._seq = 0
        at = now()
        for record in jobs:
            self._add(record, at)

    def dump(self) -> tuple[list[JobRecord], list[JobRecord]]:
        jobs = [e.record for e in sorted(self.jobs.values(), key=attrgetter("seq"))]
        failed = sorted(self.failed.values(), key=lambda r: (r.failed_at or 0.0, r.id))
        return jobs, failed

    def count(self) -> int:
        return len(self.jobs) + len(self.failed)

    def apply(self, op: dict[str, Any]) -> Any:
        """Decode one journal line written by any process and apply it."""
        kind = op["op"]
        if kind == "push":
            records = [JobRecord.from_json(d, source="journal push") for d in op["jobs"]]
            return self.push(records, now())
        if kind == "reserve":
            return self.reserve([(i, t, float(u)) for i, t, u in op["leases"]])
        if kind == "extend":
            return self.extend(op["id"], op["token"], float(op["until"]))
        if kind == "complete":
            return self.complete([(i, t) for i, t in op["leases"]])
        if kind == "release":
            available_at = float(op["available_at"])
            return self.release(
                op["id"], op["token"], int(op["attempts"]), available_at, op["error"], now()
            )
        if kind == "fail":
            return self.fail(op["id"], op["token"], op["error"], float(op["failed_at"]))
        if kind == "retry":
            return self.retry(list(op["ids"]), float(op["at"]), now())
        if kind == "forget":
            return self.forget(op["ids"])
        if kind == "purge":
            return self.purge(op["queue"])
        raise ValueError(f"unknown operation {kind!r}")

    # -- operations (the meaning of each journal line) ---------------------------------------

    def push(self, records: list[JobRecord], at: float) -> bool:
        for record in records:
            # An id is stored once: a push replayed twice (a journal restored by hand) is a no-op.
            if record.id not in self.jobs and record.id not in self.failed:
                self._add(record, at)
        return True

    def reserve(self, leases: list[tuple[str, str, float]]) -> None:
        for job_id, token, until in leases:
            entry = self.jobs.get(job_id)
            if entry is None:
                continue
            record = entry.record
            record.attempts += 1
            record.lease_token, record.reserved_until = token, until
            entry.ver += 1
            heapq.heappush(self._leases, (until, entry.ver, job_id))

    def holds(self, job_id: str, token: str | None) -> _Entry | None:
        """The entry if ``token`` is its current lease token (the fence)."""
        entry = self.jobs.get(job_id)
        if entry is None or token is None or entry.record.lease_token != token:
            return None
        return entry

    def extend(self, job_id: str, token: str, until: float) -> bool:
        entry = self.holds(job_id, token)
        if entry is None:
            return False
        entry.record.reserved_until = until
        entry.ver += 1
        heapq.heappush(self._leases, (until, entry.ver, job_id))
        return True

    def complete(self, leases: list[tuple[str, str]]) -> list[bool]:
        done = []
        for job_id, token in leases:
            entry = self.holds(job_id, token)
            if entry is not None:
                del self.jobs[job_id]
                self._free_key(entry.record)
            done.append(entry is not None)
        return done

    def release(
        self, job_id: str, token: str, attempts: int, available_at: float, error: Any, at: float
    ) -> bool:
        entry = self.holds(job_id, token)
        if entry is None:
            return False
        record = entry.record
        record.attempts, record.available_at = attempts, available_at
        if error is not None:
            record.last_error = error
        record.lease_token = record.reserved_until = None
        # Back in line behind jobs of the same priority and time, like a new push.
        entry.ver += 1
        entry.seq, self._seq = self._seq, self._seq + 1
        self._index(entry, at)
        return True

    def fail(self, job_id: str, token: str, error: Any, failed_at: float) -> bool:
        entry = self.holds(job_id, token)
        if entry is None:
            return False
        del self.jobs[job_id]
        record = entry.record
        record.last_error, record.failed_at = error, failed_at
        record.lease_token = record.reserved_until = None
        self.failed[job_id] = record
        self._free_key(record)
        return True

    def retry(self, ids: list[str], available_at: float, at: float) -> int:
        moved = 0
        for job_id in ids:
            record = self.failed.pop(job_id, None)
            if record is None:
                continue
            record.attempts, record.failed_at, record.available_at = 0, None, available_at
            self._add(record, at)
            moved += 1
        return moved

    def forget(self, ids: list[str] | None) -> int:
        if ids is None:
            count = len(self.failed)
            self.failed.clear()
            return count
        return sum(1 for i in ids if self.failed.pop(i, None) is not None)

    def purge(self, queue_name: str) -> int:
        doomed = [
            e
            for e in self.jobs.values()
            if e.record.queue == queue_name and e.record.lease_token is None
        ]
        for entry in doomed:
            del self.jobs[entry.record.id]
            self._free_key(entry.record)
        return len(doomed)

    # -- choosing the next jobs (this process's index) ---------------------------------------

    def take(self, queues: Sequence[str] | None, at: float, limit: int) -> list[_Entry]:
        """Up to ``limit`` due entries in reservation order, removed from the index."""
        names = self._prepare(queues, at)
        taken: list[_Entry] = []
        while len(taken) < limit:
            best_queue, best = None, None
            for name in names:
                head = self._head(name, at)
                if head is not None and (best is None or head < best):
                    best_queue, best = name, head
                    if queues is not None:
                        break  # a list of queues is tried in order
            if best_queue is None or best is None:
                break
            heapq.heappop(self._ready[best_queue])
            taken.append(self.jobs[best[4]])
        return taken

    def has_due(self, queues: Sequence[str] | None, at: float) -> bool:
        return any(self._head(name, at) is not None for name in self._prepare(queues, at))

    def _prepare(self, queues: Sequence[str] | None, at: float) -> list[str]:
        # Expired leases go back in line (their record keeps the old token until re-leased,
        # so the dead holder stays fenced off); due delayed jobs join the ready heaps.
        leases = self._leases
        while leases and leases[0][0] <= at:
            _, ver, job_id = heapq.heappop(leases)
            entry = self.jobs.get(job_id)
            if entry is not None and entry.ver == ver and entry.record.lease_token is not None:
                self._push_ready(entry)
        names = list(queues) if queues is not None else list({*self._ready, *self._delayed})
        for name in names:
            delayed = self._delayed.get(name)
            while delayed and delayed[0][0] <= at:
                _, _, ver, job_id = heapq.heappop(delayed)
                entry = self.jobs.get(job_id)
                if entry is not None and entry.ver == ver and entry.record.lease_token is None:
                    self._push_ready(entry)
        return names

    def _head(self, name: str, at: float) -> tuple[int, float, int, int, str] | None:
        heap = self._ready.get(name)
        while heap:
            key = heap[0]
            entry = self.jobs.get(key[4])
            if entry is not None and entry.ver == key[3]:
                record = entry.record
                if record.lease_token is None or (record.reserved_until or 0.0) <= at:
                    return key
            heapq.heappop(heap)  # stale: completed, re-leased, released or purged since
        return None

    def _add(self, record: JobRecord, at: float) -> None:
        entry = _Entry(record, self._seq)
        self._seq += 1
        self.jobs[record.id] = entry
        if record.unique_key is not None:
            self.unique[record.unique_key] = record.id
        self._index(entry, at)

    def _index(self, entry: _Entry, at: float) -> None:
        record = entry.record
        if record.lease_token is not None:
            heapq.heappush(self._leases, (record.reserved_until or 0.0, entry.ver, record.id))
        elif record.available_at > at:
            heapq.heappush(
                self._delayed.setdefault(record.queue, []),
                (record.available_at, entry.seq, entry.ver, record.id),
            )
        else:
            self._push_ready(entry)

    def _push_ready(self, entry: _Entry) -> None:
        record = entry.record
        heapq.heappush(
            self._ready.setdefault(record.queue, []),
            (-record.priority, record.available_at, entry.seq, entry.ver, record.id),
        )

    def _free_key(self, record: JobRecord) -> None:
        if record.unique_key is not None and self.unique.get(record.unique_key) == record.id:
            del self.unique[record.unique_key]

    def stats(self, queues: Sequence[str] | None, at: float) -> QueueStats:
        names = (
            set(queues)
            if queues is not None
            else {e.record.queue for e in self.jobs.values()}
            | {r.queue for r in self.failed.values()}
        )
        out = {q: {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0} for q in names}
        for entry in self.jobs.values():
            record = entry.record
            counts = out.get(record.queue)
            if counts is None:
                continue
            if record.lease_token is not None and (record.reserved_until or 0.0) > at:
                counts["reserved"] += 1
            elif record.available_at <= at:
                counts["pending"] += 1  # due, or its lease ran out and it is free to take
            else:
                counts["delayed"] += 1
        for record in self.failed.values():
            if record.queue in out:
                out[record.queue]["failed"] += 1
        return out


_ENCODER = json.JSONEncoder(separators=(",", ":"))


def _encode(op: dict[str, Any]) -> bytes:
    return _ENCODER.encode(op).encode() + b"\n"


def _stored(record: JobRecord) -> JobRecord:
    copy = record.copy()
    copy.instance = None
    return copy


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
        self._replica = _Replica()
        self._io: IOThread | None = None
        self._lines: list[bytes] = []  # the I/O thread's lines of the batch under way
        self._pid = os.getpid()
        self._poll = self.options.poll_interval
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def problems(self) -> list[str]:
        """What recovery found wrong when the store was last loaded (empty when all was well)."""
        return list(self._store.problems)

    async def connect(self) -> None:
        if self._io is not None:
            return
        self._pid = os.getpid()
        self._io = IOThread(self._store, self._replica)
        self._lines = self._io.lines
        # Stop the thread if the driver is dropped without close().
        weakref.finalize(self, self._io.stop)
        try:
            await self._call(self._store.open, self._replica, locked=False)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        io, self._io = self._io, None
        if io is None:
            return
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
        if self._io is None:
            raise DriverError(f"file queue {self.path}: not connected (call connect() first)")
        if os.getpid() != self._pid:
            raise DriverError(
                f"file queue {self.path}: this driver was connected in process {self._pid}; "
                "create and connect a driver in each process"
            )
        return await self._io.call(
            fn, *args, locked=locked, durable=durable, skip=skip, empty=empty
        )

    def _write(self, op: dict[str, Any] | bytes) -> None:
        """Queue one journal line for this batch's append (on the I/O thread)."""
        self._lines.append(op if isinstance(op, bytes) else _encode(op))

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        stored = await self._push([record], batch=False)
        if stored:
            self._notify()
        return bool(stored)

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        if records:
            # One journal line for the whole batch: it is appended whole or not at all.
            await self._push(list(records), batch=True)
            self._notify()

    async def _push(self, records: list[JobRecord], *, batch: bool) -> bool:
        # Always through the I/O thread: even an unsynced write can stall on writeback, and the
        # event loop must never wait for the disk.
        return bool(await self._call(self._do_push, records, batch))

    def _do_push(self, records: list[JobRecord], batch: bool) -> bool:
        line = _encode({"op": "push", "jobs": [r.to_json() for r in records]})
        unique = self._replica.unique
        keys = [r.unique_key for r in records if r.unique_key is not None]
        if keys and (len(set(keys)) != len(keys) or any(k in unique for k in keys)):
            if batch:
                taken = sorted({k for k in keys if k in unique or keys.count(k) > 1})
                raise DuplicateJobError(
                    f"file queue {self.path}: the batch holds unique keys {taken} that are "
                    "already pending or repeated; nothing was stored"
                )
            return False
        self._replica.push([_stored(r) for r in records], now())
        self._write(line)
        return True

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
                self._do_reserve, names, lease, limit, durable=False, skip=nothing_due, empty=[]
            )
            if records:
                self._poll = self.options.poll_interval
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._idle(min(self._poll, remaining))
            self._poll = min(self._poll * 1.5, self.options.max_poll_interval)

    def _do_reserve(self, queues: list[str] | None, lease: float, limit: int) -> list[JobRecord]:
        at = now()
        entries = self._replica.take(queues, at, limit)
        if not entries:
            return []
        until = at + lease
        leases = [(e.record.id, new_token(), until) for e in entries]
        self._write({"op": "reserve", "leases": leases})
        self._replica.reserve(leases)
        return [e.record.copy() for e in entries]

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
        waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(wake, future)
        self._poll = self.options.poll_interval

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        # Not fsynced: a lease lost in a power cut only makes the job run again.
        until = await self._call(
            self._do_extend, record.id, record.lease_token, lease, durable=False
        )
        if until is None:
            return False
        record.reserved_until = until
        return True

    def _do_extend(self, job_id: str, token: str | None, lease: float) -> float | None:
        if self._replica.holds(job_id, token) is None:
            return None
        until = now() + lease
        self._write({"op": "extend", "id": job_id, "token": token, "until": until})
        self._replica.extend(job_id, token or "", until)
        return until

    async def complete(self, record: JobRecord) -> bool:
        return (await self.complete_many([record]))[0]

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        pairs = [(r.id, r.lease_token) for r in records]
        return await self._call(self._do_complete, pairs) if pairs else []

    def _do_complete(self, pairs: list[tuple[str, str | None]]) -> list[bool]:
        held: dict[str, str] = {}
        flags = []
        for job_id, token in pairs:
            ok = job_id not in held and self._replica.holds(job_id, token) is not None
            if ok and token is not None:
                held[job_id] = token
            flags.append(ok)
        if held:
            leases = list(held.items())
            self._write({"op": "complete", "leases": leases})
            self._replica.complete(leases)
        return flags

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        args = (record.id, record.lease_token, record.attempts, delay, error)
        released = bool(await self._call(self._do_release, *args))
        if released:
            self._notify()
        return released

    def _do_release(
        self, job_id: str, token: str | None, attempts: int, delay: float, error: str | None
    ) -> bool:
        if self._replica.holds(job_id, token) is None:
            return False
        at = now()
        op = {"op": "release", "id": job_id, "token": token, "attempts": attempts}
        op |= {"available_at": at + delay, "error": error}
        self._write(op)
        return self._replica.release(job_id, token or "", attempts, at + delay, error, at)

    async def fail(self, record: JobRecord, error: str) -> bool:
        return bool(await self._call(self._do_fail, record.id, record.lease_token, error))

    def _do_fail(self, job_id: str, token: str | None, error: str) -> bool:
        if self._replica.holds(job_id, token) is None:
            return False
        at = now()
        self._write({"op": "fail", "id": job_id, "token": token, "error": error, "failed_at": at})
        return self._replica.fail(job_id, token or "", error, at)

    # -- inspecting and managing -----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        names = None if queues is None else list(queues)
        # Reads write nothing, so they never wait for an fsync (durable=False).
        return await self._call(lambda: self._replica.stats(names, now()), durable=False)

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        return await self._call(self._do_failed, queue, limit, durable=False)

    def _do_failed(self, queue_name: str | None, limit: int) -> list[JobRecord]:
        failed = self._replica.failed.values()
        chosen = [r for r in failed if queue_name is None or r.queue == queue_name]
        chosen.sort(key=lambda r: (r.failed_at or 0.0, r.id))
        return [r.copy() for r in chosen[:limit]]

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        moved = await self._call(self._do_retry, None if ids is None else list(ids))
        if moved:
            self._notify()
        return int(moved)

    def _do_retry(self, ids: list[str] | None) -> int:
        failed, unique = self._replica.failed, self._replica.unique
        chosen = [
            job_id
            for job_id in (list(failed) if ids is None else dict.fromkeys(ids))
            if job_id in failed
            # A job whose unique key is pending again stays failed: retrying it would run the
            # same unique work twice.
            and failed[job_id].unique_key not in unique
        ]
        if not chosen:
            return 0
        at = now()
        self._write({"op": "retry", "ids": chosen, "at": at})
        return self._replica.retry(chosen, at, at)

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        return int(await self._call(self._do_forget, None if ids is None else list(ids)))

    def _do_forget(self, ids: list[str] | None) -> int:
        failed = self._replica.failed
        chosen = list(failed) if ids is None else [i for i in dict.fromkeys(ids) if i in failed]
        if not chosen:
            return 0
        self._write({"op": "forget", "ids": chosen})
        return self._replica.forget(chosen)

    async def purge(self, queue: str) -> int:
        return int(await self._call(self._do_purge, queue))

    def _do_purge(self, queue_name: str) -> int:
        if not any(
            e.record.queue == queue_name and e.record.lease_token is None
            for e in self._replica.jobs.values()
        ):
            return 0
        self._write({"op": "purge", "queue": queue_name})
        return self._replica.purge(queue_name)

    async def compact(self) -> None:
        """Compact the journal into a new snapshot now (rotating backups), whatever its size."""
        await self._call(self._do_compact)

    def _do_compact(self) -> None:
        # Lines of earlier calls in this batch are already in the replica: write them to the
        # journal being archived, or replaying the new one would apply them twice.
        if self._lines:
            self._store.append(b"".join(self._lines))
            self._lines.clear()
        self._store.compact(self._replica)
