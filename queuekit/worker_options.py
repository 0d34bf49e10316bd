"""What a worker runs with (``WorkerOptions``), what it reports (``WorkerSummary``) and why it
stopped (``StopReason``); the loop itself is in ``worker``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from .middleware import Outcome

__all__ = ["StopReason", "WorkerOptions", "WorkerSummary"]


class StopReason(StrEnum):
    """Why a worker stopped."""

    #: It took ``max_jobs`` jobs.
    MAX_JOBS = "max_jobs"
    #: Its wall-time ``timeout`` passed.
    TIMEOUT = "timeout"
    #: ``stop()`` was called (or the CLI got SIGINT/SIGTERM).
    STOPPED = "stopped"


class WorkerOptions(BaseModel):
    """Everything one worker runs with; all durations in seconds.

    ``queues`` None means every queue; a list is tried in the order given. ``max_jobs`` stops the
    worker after that many jobs, ``timeout`` after that much wall time. ``delay`` pauses each slot
    after each job. ``idle_wait`` bounds one wait for work. ``grace`` is how long a graceful stop
    lets running jobs finish before handing them back. ``lease`` defaults to the driver's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    queues: tuple[str, ...] | None = None
    concurrency: int = Field(1, ge=1)
    max_jobs: int | None = Field(None, ge=1)
    delay: float = Field(0.0, ge=0)
    timeout: float | None = Field(None, gt=0)
    idle_wait: float = Field(1.0, gt=0)
    grace: float = Field(30.0, ge=0)
    job_timeout: float | None = Field(None, gt=0)
    lease: float | None = Field(None, gt=0)


@dataclass(slots=True)
class WorkerSummary:
    """What a worker did: jobs processed, by outcome, and why it stopped."""

    processed: int = 0
    completed: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    abandoned: int = 0
    stop_reason: StopReason | None = None

    def count(self, outcome: Outcome | None) -> None:
        """Add one job that ended with ``outcome``."""
        if outcome is Outcome.RELEASED:
            self.released += 1
            return
        self.processed += 1
        if outcome is Outcome.COMPLETED:
            self.completed += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.RETRIED:
            self.retried += 1
        elif outcome is Outcome.ABANDONED:
            self.abandoned += 1
