"""The sample jobs of ``queuekit demo`` and the reproducible mix it dispatches (``plan_jobs``).

Each class shows one path a job can take (see ``queuekit.demo``); their ``job_name``s are fixed,
so a kept demo store can be run again by a worker that imports ``queuekit.demo``.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import ClassVar

from .errors import PermanentError
from .job import QueueJob

__all__ = [
    "ChargeCardJob",
    "DailyReportJob",
    "DemoPlan",
    "ImportRowsJob",
    "RefundJob",
    "ResizeImageJob",
    "SendReceiptJob",
    "plan_jobs",
]

# Retry delays are kept short so the demo finishes in seconds; real jobs wait longer.
_SHORT = 0.05


class ResizeImageJob(QueueJob):
    """Succeeds after a few milliseconds of simulated I/O (an ``async`` handle)."""

    job_name: ClassVar[str] = "demo.resize_image"
    queue: ClassVar[str] = "images"

    image_id: int
    width: int

    async def handle(self) -> dict[str, int]:
        await asyncio.sleep(0.001 * (1 + self.image_id % 5))
        return {"image_id": self.image_id, "width": self.width}


class SendReceiptJob(QueueJob):
    """Succeeds; a plain ``def`` handle, so it runs in a worker thread."""

    job_name: ClassVar[str] = "demo.send_receipt"
    queue: ClassVar[str] = "emails"

    order_id: int
    email: str

    def handle(self) -> None:
        time.sleep(0.002)  # a blocking client call, kept off the event loop by the worker


class ChargeCardJob(QueueJob):
    """Fails its first ``failures`` attempts, then succeeds: retries with a short backoff."""

    job_name: ClassVar[str] = "demo.charge_card"
    queue: ClassVar[str] = "payments"
    priority: ClassVar[int] = 10
    max_retries: ClassVar[int] = 3
    retry_delay: ClassVar[float] = _SHORT
    retry_backoff: ClassVar[bool] = True

    order_id: int
    failures: int

    async def handle(self) -> None:
        await asyncio.sleep(0.002)
        if self.attempt <= self.failures:
            raise ConnectionError(
                f"payment gateway timed out charging order {self.order_id} (attempt {self.attempt})"
            )


class ImportRowsJob(QueueJob):
    """Fails on every attempt: after its two retries it lands in the failed store."""

    job_name: ClassVar[str] = "demo.import_rows"
    max_retries: ClassVar[int] = 2
    retry_delay: ClassVar[list[float]] = [_SHORT, 2 * _SHORT]

    batch: int

    async def handle(self) -> None:
        raise ValueError(
            f"batch {self.batch}, row {17 + self.batch % 40}: invalid date '2024-13-01'"
        )


class RefundJob(QueueJob):
    """Raises ``PermanentError``: fails at once, no retry."""

    job_name: ClassVar[str] = "demo.refund"
    queue: ClassVar[str] = "payments"

    order_id: int

    async def handle(self) -> None:
        raise PermanentError(f"order {self.order_id} was never paid; nothing to refund")


class DailyReportJob(QueueJob):
    """Succeeds; dispatched with a delay of one to two seconds."""

    job_name: ClassVar[str] = "demo.daily_report"
    queue: ClassVar[str] = "reports"

    day: int

    async def handle(self) -> None:
        await asyncio.sleep(0.001)


@dataclass(slots=True)
class DemoPlan:
    """The jobs the demo dispatches: ``now`` at once, ``delayed`` as (job, seconds) pairs."""

    now: list[QueueJob] = field(default_factory=list)
    delayed: list[tuple[QueueJob, float]] = field(default_factory=list)

    @property
    def total(self) -> int:
        """How many jobs in all."""
        return len(self.now) + len(self.delayed)

    @property
    def doomed(self) -> int:
        """How many are built to fail for good."""
        return sum(isinstance(job, ImportRowsJob | RefundJob) for job in self.now)


def plan_jobs(count: int, seed: int = 3) -> DemoPlan:
    """A reproducible mix of ``count`` demo jobs (about 5% delayed, 10% flaky, 2.5% doomed)."""
    rng = random.Random(seed)
    plan = DemoPlan()
    for i in range(count):
        roll = rng.random()
        if roll < 0.05:
            plan.delayed.append((DailyReportJob(day=i), round(rng.uniform(1.0, 2.0), 3)))
        elif roll < 0.15:
            plan.now.append(ChargeCardJob(order_id=i, failures=rng.choice((1, 1, 2))))
        elif roll < 0.165:
            plan.now.append(ImportRowsJob(batch=i))
        elif roll < 0.175:
            plan.now.append(RefundJob(order_id=i))
        elif roll < 0.6:
            plan.now.append(ResizeImageJob(image_id=i, width=rng.choice((320, 640, 1280))))
        else:
            plan.now.append(SendReceiptJob(order_id=i, email=f"customer{i}@example.com"))
    return plan
