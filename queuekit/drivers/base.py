"""The driver contract: ``QueueDriver`` and its ``Capability`` flags.

A driver stores ``JobRecord``s and hands them out under leases. It knows nothing of job classes,
workers or retries: the runner decides what happens to a job, the driver makes it durable.
Every driver runs the one contract suite in ``queuekit.testing``.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence
from enum import Flag, auto
from typing import Any, ClassVar

from ..record import JobRecord

__all__ = ["Capability", "QueueDriver", "QueueStats"]

#: ``{queue_name: {"pending": n, "delayed": n, "reserved": n, "failed": n}}``
QueueStats = dict[str, dict[str, int]]


class Capability(Flag):
    """What a driver can do; the contract suite runs the tests of every flag a driver declares."""

    NONE = 0
    #: Higher ``priority`` is reserved first.
    PRIORITY = auto()
    #: ``available_at`` in the future holds a job back until then.
    DELAY = auto()
    #: ``push_many`` stores all records or none.
    ATOMIC_BATCH = auto()
    #: ``reserve(wait=...)`` blocks on the backend (or an in-process signal) instead of polling.
    BLOCKING_WAIT = auto()
    #: Jobs survive the process (and a restart of the backend where it is durable).
    PERSISTENT = auto()
    #: ``push(record, connection=...)`` writes inside the caller's open transaction.
    TRANSACTIONAL = auto()
    #: ``push`` refuses a record whose ``unique_key`` equals a pending or running job's.
    UNIQUE = auto()
    #: Jobs run in the dispatching caller at once (the sync driver).
    INLINE = auto()


class QueueDriver(ABC):
    """Abstract, asyncio driver. Subclass it to add a backend and register it by name.

    Guarantees every implementation keeps (the contract suite checks each):

    - ``reserve`` first puts expired leases back, then takes the due job with the highest
      ``priority``, then the oldest ``available_at``, then the earliest pushed; it counts the
      attempt (``attempts += 1``) at reservation and sets ``reserved_until`` and a fresh
      ``lease_token``. Two callers never hold the same lease at once.
    - ``extend``, ``complete``, ``release`` and ``fail`` act only while ``record.lease_token``
      still matches the stored one, and return False when the lease was lost, so a worker whose
      lease ran out can never delete, fail or re-queue the job another worker now holds.
    - ``release`` stores the record's ``attempts`` as given (the worker lowers it by one when it
      hands back a job it interrupted on shutdown, so that attempt does not count).

    Example::

        class MyDriver(QueueDriver):
            name = "mine"
            capabilities = Capability.PRIORITY | Capability.DELAY
            ...

        queuekit.register_driver("mine", MyDriver)
    """

    #: The name the driver is registered under.
    name: ClassVar[str] = "custom"
    #: What the driver can do.
    capabilities: ClassVar[Capability] = Capability.NONE
    #: Lease length in seconds used by workers (the ``retry_after`` option of most drivers).
    default_lease: float = 90.0
    #: True for in-process drivers that keep ``record.instance`` (the dispatched job object) and
    #: hand it back from ``reserve``; drivers that store records must leave it False.
    keeps_instances: ClassVar[bool] = False

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections and create storage; called once by ``QueueManager.init()``."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the driver may not be used afterwards."""

    @abstractmethod
    async def push(self, record: JobRecord, **options: Any) -> bool:
        """Store one record. True when stored; False when ``UNIQUE`` refused it as a duplicate.

        Once it returns, the job is as durable as the backend makes it.
        """

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        """Store several records; all or nothing on drivers with ``ATOMIC_BATCH``."""
        for record in records:
            await self.push(record, **options)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # reserve and reserve_many default to each other: a driver must define at least one.
        if cls.reserve is QueueDriver.reserve and cls.reserve_many is QueueDriver.reserve_many:
            raise TypeError(f"{cls.__name__} must define reserve() or reserve_many()")

    async def reserve(
        self, queues: Sequence[str] | None, *, lease: float, wait: float = 0.0
    ) -> JobRecord | None:
        """Lease the next due job of ``queues`` (None = every queue; a list is tried in order).

        Waits up to ``wait`` seconds for one to become available; returns None if none did.
        The default is ``reserve_many`` with ``limit=1``.
        """
        records = await self.reserve_many(queues, lease=lease, limit=1, wait=wait)
        return records[0] if records else None

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        """Lease up to ``limit`` due jobs in one go (one round trip where the backend can).

        Waits up to ``wait`` seconds only while it has found nothing. The default calls
        ``reserve`` up to ``limit`` times; override it to use one round trip.
        """
        records: list[JobRecord] = []
        while len(records) < limit:
            record = await self.reserve(queues, lease=lease, wait=0.0 if records else wait)
            if record is None:
                break
            records.append(record)
        return records

    @abstractmethod
    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        """Push the lease deadline to ``now + lease``; False if the lease was lost."""

    @abstractmethod
    async def complete(self, record: JobRecord) -> bool:
        """Delete a finished job; False if the lease was lost (nothing is changed)."""

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Complete several jobs (one round trip where the backend can); one flag per record."""
        return [await self.complete(record) for record in records]

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """Complete ``record``, then lease up to ``limit`` next jobs: ``(completed, records)``.

        ``completed`` is what ``complete(record)`` returns (False if the lease was lost; the
        reservation happens either way). ``records`` is what ``reserve_many(queues, lease=lease,
        limit=limit, wait=wait)`` returns: each lease starts when that job is reserved, and the
        completion is stored before any waiting starts. ``limit=0`` only completes.

        A worker running one job at a time calls this once per job instead of ``complete``
        then ``reserve``. The default does exactly that, in two calls. Override it when the
        backend can do both in one round trip or one transaction; the worker then prefers it
        to running the two calls side by side. If it raises, the caller cannot tell whether
        the completion was stored: calling ``complete(record)`` again is safe (it returns False
        once the job is gone), and no job is left leased by the failed call, except one whose
        reservation reached a remote store but whose reply was lost: its lease runs out and it
        runs again, as after any lost reply.

        Example::

            completed, records = await driver.complete_and_reserve(
                record, ["default"], lease=90.0
            )
        """
        completed = await self.complete(record)
        if limit <= 0:
            return completed, []
        return completed, await self.reserve_many(queues, lease=lease, limit=limit, wait=wait)

    @abstractmethod
    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        """Put a leased job back, available after ``delay`` seconds, keeping ``error`` as its
        ``last_error`` and ``record.attempts`` as its attempt count; False if the lease was lost.
        """

    @abstractmethod
    async def fail(self, record: JobRecord, error: str) -> bool:
        """Move a leased job to the failed store with ``error``; False if the lease was lost."""

    @abstractmethod
    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        """Counts per queue: ``pending`` (due now), ``delayed``, ``reserved``, ``failed``.

        ``reserved`` counts live leases; a job whose lease ran out is ``pending`` (the next
        reservation takes it back) even before anyone has reclaimed it.
        """

    @abstractmethod
    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Failed records, oldest failure first, at most ``limit``."""

    @abstractmethod
    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        """Put failed jobs (all when ``ids`` is None) back as new, with ``attempts`` reset to 0.

        Returns how many were moved.
        """

    @abstractmethod
    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        """Delete failed jobs (all when ``ids`` is None); returns how many were deleted."""

    @abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every pending and delayed job of ``queue``; returns how many were deleted."""

    async def _sleep_poll(self, deadline: float, interval: float) -> bool:
        """Sleep until the next poll; False once ``deadline`` (loop time) has passed."""
        loop = asyncio.get_running_loop()
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.sleep(min(interval, remaining))
        return True
