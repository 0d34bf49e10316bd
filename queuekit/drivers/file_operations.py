"""What each file driver operation decides and writes, run on the I/O thread under the lock.

Each method runs after the replica caught up with every other process, so what it reads is the
store's current state: it decides (which job is next, whether a lease token still holds),
queues its journal line for the batch's one append, and applies the same change to the replica.
The driver in ``file`` only carries calls to the I/O thread and back.
"""

from __future__ import annotations

from typing import Any

from .. import codec
from ..clock import new_token, now
from ..errors import DuplicateJobError, PayloadError
from ..record import JobRecord
from .base import QueueStats
from .file_journal import encode_line
from .file_replica import MemoryReplica
from .file_store import JournalStore

__all__ = ["Operations"]


class Operations:
    """The driver's operations on its replica, each queuing one journal line.

    ``lines`` is the I/O thread's list of lines for the batch under way; the thread appends
    them in one write once every call of the batch has run.
    """

    def __init__(self, replica: MemoryReplica, store: JournalStore, lines: list[bytes]) -> None:
        self.replica = replica
        self.store = store
        self.lines = lines
        self.path = store.path

    def _write(self, op: dict[str, Any]) -> None:
        self.lines.append(encode_line(op))

    def push(self, records: list[JobRecord], batch: bool) -> bool:
        """Store ``records`` as one line, all or none; False (or, for a batch,
        ``DuplicateJobError``) if a unique key is pending or repeated."""
        op = {"op": "push", "jobs": [r.to_json() for r in records]}
        exact = codec.encode_exact(op)
        if exact is not None:
            line = exact + b"\n"
        else:
            try:
                line = encode_line(op)
            except (TypeError, ValueError) as e:
                raise _unstorable(records, e) from e
            # Only json could write these records (non-string keys, huge integers): keep what
            # every process reads back from the line, not the caller's objects, so this process
            # hands out the same records as the others.
            records = [JobRecord.from_json(job) for job in codec.loads(line)["jobs"]]
        unique = self.replica.unique
        keys = [r.unique_key for r in records if r.unique_key is not None]
        if keys and (len(set(keys)) != len(keys) or any(k in unique for k in keys)):
            if batch:
                taken = sorted({k for k in keys if k in unique or keys.count(k) > 1})
                raise DuplicateJobError(
                    f"file queue {self.path}: the batch holds unique keys {taken} that are "
                    "already pending or repeated; nothing was stored"
                )
            return False
        self.replica.push([_stored(r) for r in records], now())
        self.lines.append(line)
        return True

    def reserve(self, queues: list[str] | None, lease: float, limit: int) -> list[JobRecord]:
        """Lease up to ``limit`` due jobs until now + ``lease``; copies of their records."""
        at = now()
        entries = self.replica.take(queues, at, limit)
        if not entries:
            return []
        until = at + lease
        leases = [(e.record.id, new_token(), until) for e in entries]
        self._write({"op": "reserve", "leases": leases})
        self.replica.reserve(leases)
        return [e.record.copy() for e in entries]

    def extend(self, job_id: str, token: str | None, lease: float) -> float | None:
        """Renew a held lease; the new expiry, or None if ``token`` no longer holds it."""
        if self.replica.holds(job_id, token) is None:
            return None
        until = now() + lease
        self._write({"op": "extend", "id": job_id, "token": token, "until": until})
        self.replica.extend(job_id, token or "", until)
        return until

    def complete(self, pairs: list[tuple[str, str | None]]) -> list[bool]:
        """Delete each held (id, token); one flag per pair (a repeated id counts once)."""
        held: dict[str, str] = {}
        flags = []
        for job_id, token in pairs:
            ok = job_id not in held and self.replica.holds(job_id, token) is not None
            if ok and token is not None:
                held[job_id] = token
            flags.append(ok)
        if held:
            leases = list(held.items())
            self._write({"op": "complete", "leases": leases})
            self.replica.complete(leases)
        return flags

    def complete_and_reserve(
        self, pair: tuple[str, str | None], queues: list[str] | None, lease: float, limit: int
    ) -> tuple[bool, list[JobRecord]]:
        """``complete([pair])``, then ``reserve(queues, lease, limit)``: two lines of one append."""
        (completed,) = self.complete([pair])
        return completed, self.reserve(queues, lease, limit) if limit > 0 else []

    def release(
        self, job_id: str, token: str | None, attempts: int, delay: float, error: str | None
    ) -> bool:
        """Put a held job back in line after ``delay`` seconds."""
        if self.replica.holds(job_id, token) is None:
            return False
        at = now()
        op = {"op": "release", "id": job_id, "token": token, "attempts": attempts}
        op |= {"available_at": at + delay, "error": error}
        self._write(op)
        return self.replica.release(job_id, token or "", attempts, at + delay, error, at)

    def fail(self, job_id: str, token: str | None, error: str) -> bool:
        """Move a held job to the failed store."""
        if self.replica.holds(job_id, token) is None:
            return False
        at = now()
        self._write({"op": "fail", "id": job_id, "token": token, "error": error, "failed_at": at})
        return self.replica.fail(job_id, token or "", error, at)

    def stats(self, queues: list[str] | None) -> QueueStats:
        """Counts per queue (writes nothing)."""
        return self.replica.stats(queues, now())

    def failed(self, queue_name: str | None, limit: int) -> list[JobRecord]:
        """Copies of failed jobs in failure order (writes nothing)."""
        failed = self.replica.failed.values()
        chosen = [r for r in failed if queue_name is None or r.queue == queue_name]
        chosen.sort(key=lambda r: (r.failed_at or 0.0, r.id))
        return [r.copy() for r in chosen[:limit]]

    def retry(self, ids: list[str] | None) -> int:
        """Move failed jobs back to their queues; how many moved."""
        failed, unique = self.replica.failed, self.replica.unique
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
        return self.replica.retry(chosen, at, at)

    def forget(self, ids: list[str] | None) -> int:
        """Delete failed jobs; how many were deleted."""
        failed = self.replica.failed
        chosen = list(failed) if ids is None else [i for i in dict.fromkeys(ids) if i in failed]
        if not chosen:
            return 0
        self._write({"op": "forget", "ids": chosen})
        return self.replica.forget(chosen)

    def purge(self, queue_name: str) -> int:
        """Delete a queue's jobs that are not leased; how many were deleted."""
        if not any(
            e.record.queue == queue_name and e.record.lease_token is None
            for e in self.replica.jobs.values()
        ):
            return 0
        self._write({"op": "purge", "queue": queue_name})
        return self.replica.purge(queue_name)

    def compact(self) -> None:
        """Compact the journal into a new snapshot now."""
        # Lines of earlier calls in this batch are already in the replica: write them to the
        # journal being archived, or replaying the new one would apply them twice.
        if self.lines:
            self.store.append(b"".join(self.lines))
            self.lines.clear()
        self.store.compact(self.replica)


def _stored(record: JobRecord) -> JobRecord:
    # The replica outlives the call: it keeps no reference to the caller's job object.
    copy = record.copy()
    copy.instance = None
    return copy


def _unstorable(records: list[JobRecord], error: Exception) -> PayloadError:
    """The error naming the first record of a refused line that is not JSON."""
    for record in records:
        try:
            codec.dumps_bytes(record.to_json())
        except (TypeError, ValueError) as e:
            return record.unstorable(e)
    return records[0].unstorable(error)
