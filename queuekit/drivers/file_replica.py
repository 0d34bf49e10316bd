"""The file driver's in-memory replica: every stored job, and this process's index over them.

Each process keeps the whole store in memory and changes it only by applying journal operations
(its own and those other processes appended), so every process holds the same jobs. The heaps
that choose the next job are this process's own, rebuilt lazily.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from operator import attrgetter
from typing import Any

from ..clock import now
from ..record import JobRecord
from .base import QueueStats

__all__ = ["Entry", "MemoryReplica"]


class Entry:
    """A stored job and its place in the order; ``ver`` changes with every state change, so
    heap entries made before it are recognised as stale."""

    __slots__ = ("record", "seq", "ver")

    def __init__(self, record: JobRecord, seq: int) -> None:
        self.record = record
        self.seq = seq
        self.ver = 0


class MemoryReplica:
    """The whole store in memory, changed only by applying journal operations.

    Applying the same operations in the same order gives the same jobs in every process; the
    heaps are this process's own index over them (rebuilt lazily, checked by ``ver``).
    """

    def __init__(self) -> None:
        self.reset([], [])

    def reset(self, jobs: list[JobRecord], failed: list[JobRecord]) -> None:
        """Replace everything with a snapshot's jobs (in push order) and failed jobs."""
        self.jobs: dict[str, Entry] = {}
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
        """Jobs in push order and failed jobs in failure order, for a snapshot."""
        jobs = [e.record for e in sorted(self.jobs.values(), key=attrgetter("seq"))]
        failed = sorted(self.failed.values(), key=lambda r: (r.failed_at or 0.0, r.id))
        return jobs, failed

    def count(self) -> int:
        """How many records (jobs and failed jobs) the store holds."""
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
        """Add jobs in order; an id already stored is skipped."""
        for record in records:
            # An id is stored once: a push replayed twice (a journal restored by hand) is a no-op.
            if record.id not in self.jobs and record.id not in self.failed:
                self._add(record, at)
        return True

    def reserve(self, leases: list[tuple[str, str, float]]) -> None:
        """Lease jobs: (id, token, until) each, counting an attempt."""
        for job_id, token, until in leases:
            entry = self.jobs.get(job_id)
            if entry is None:
                continue
            record = entry.record
            record.attempts += 1
            record.lease_token, record.reserved_until = token, until
            entry.ver += 1
            heapq.heappush(self._leases, (until, entry.ver, job_id))

    def holds(self, job_id: str, token: str | None) -> Entry | None:
        """The entry if ``token`` is its current lease token (the fence)."""
        entry = self.jobs.get(job_id)
        if entry is None or token is None or entry.record.lease_token != token:
            return None
        return entry

    def extend(self, job_id: str, token: str, until: float) -> bool:
        """Move a held lease's expiry to ``until``."""
        entry = self.holds(job_id, token)
        if entry is None:
            return False
        entry.record.reserved_until = until
        entry.ver += 1
        heapq.heappush(self._leases, (until, entry.ver, job_id))
        return True

    def complete(self, leases: list[tuple[str, str]]) -> list[bool]:
        """Delete each job held by its (id, token); one flag per pair."""
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
        """Put a held job back in line at ``available_at``, behind its equals."""
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
        """Move a held job to the failed jobs."""
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
        """Move failed jobs back in line, attempts reset; how many moved."""
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
        """Delete failed jobs (all with None); how many were deleted."""
        if ids is None:
            count = len(self.failed)
            self.failed.clear()
            return count
        return sum(1 for i in ids if self.failed.pop(i, None) is not None)

    def purge(self, queue_name: str) -> int:
        """Delete a queue's jobs that are not leased; how many were deleted."""
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

    def take(self, queues: Sequence[str] | None, at: float, limit: int) -> list[Entry]:
        """Up to ``limit`` due entries in reservation order, removed from the index."""
        names = self._prepare(queues, at)
        taken: list[Entry] = []
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
        """True if some job in ``queues`` (all with None) can be taken at ``at``."""
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
        entry = Entry(record, self._seq)
        self._seq += 1
        self.jobs[record.id] = entry
        if record.unique_key is not None:
            self.unique[record.unique_key] = record.id
        self._index(entry, at)

    def _index(self, entry: Entry, at: float) -> None:
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

    def _push_ready(self, entry: Entry) -> None:
        record = entry.record
        heapq.heappush(
            self._ready.setdefault(record.queue, []),
            (-record.priority, record.available_at, entry.seq, entry.ver, record.id),
        )

    def _free_key(self, record: JobRecord) -> None:
        if record.unique_key is not None and self.unique.get(record.unique_key) == record.id:
            del self.unique[record.unique_key]

    def stats(self, queues: Sequence[str] | None, at: float) -> QueueStats:
        """Pending, delayed, reserved and failed counts per queue at ``at``."""
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
