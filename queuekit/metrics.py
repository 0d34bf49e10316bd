"""``MetricsCollector``: counts what this process's workers and dispatches did.

It listens on job lifecycle events (it is a ``Middleware``) and is safe to read from any thread,
so a health check endpoint can call ``get_metrics()`` while workers run.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

from .middleware import Middleware, Outcome

if TYPE_CHECKING:
    from .record import JobRecord
    from .runner import Execution

__all__ = ["MetricsCollector"]


class MetricsCollector(Middleware):
    """Thread-safe counters of dispatched, completed, failed and retried jobs.

    ``snapshot()`` returns the dict ``QueueManager.get_metrics()`` serves; ``prometheus()``
    renders the same figures in the Prometheus text format.

    Example::

        metrics = manager.get_metrics()
        if metrics["failure_rate"] > 0.1:
            alert(f"{metrics['failure_rate']:.0%} of jobs fail")
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Set every figure back to zero."""
        with self._lock:
            self._queued: Counter[str] = Counter()
            self._completed: Counter[str] = Counter()
            self._failed: Counter[str] = Counter()
            self._retried: Counter[str] = Counter()
            self._processing = 0
            self._busy_seconds = 0.0
            self._finished = 0

    # -- lifecycle hooks -----------------------------------------------------------------

    def after_dispatch(self, records: list[JobRecord]) -> None:
        """Count dispatched jobs by type."""
        with self._lock:
            if len(records) == 1:
                self._queued[records[0].job_name] += 1
            else:
                self._queued.update(r.job_name for r in records)

    def before_job(self, execution: Execution) -> None:
        """Count a job as processing."""
        with self._lock:
            self._processing += 1

    def after_job(self, execution: Execution) -> None:
        """Count a finished attempt by outcome and add its run time."""
        name = execution.record.job_name
        outcome = execution.outcome
        with self._lock:
            if execution.started:
                self._processing -= 1
            self._busy_seconds += execution.duration
            self._finished += 1
            if outcome is Outcome.COMPLETED:
                self._completed[name] += 1
            elif outcome is Outcome.FAILED:
                self._failed[name] += 1
            elif outcome is Outcome.RETRIED:
                self._retried[name] += 1

    # -- reading -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every figure, as ``QueueManager.get_metrics()`` returns it."""
        with self._lock:
            completed = sum(self._completed.values())
            failed = sum(self._failed.values())
            done = completed + failed
            return {
                "total_queued": sum(self._queued.values()),
                "total_completed": completed,
                "total_failed": failed,
                "total_retried": sum(self._retried.values()),
                "currently_processing": self._processing,
                "success_rate": completed / done if done else 0.0,
                "failure_rate": failed / done if done else 0.0,
                "average_processing_time_ms": (
                    self._busy_seconds * 1000.0 / self._finished if self._finished else 0.0
                ),
                "queued_by_type": dict(self._queued),
                "completed_by_type": dict(self._completed),
                "failed_by_type": dict(self._failed),
                "retried_by_type": dict(self._retried),
            }

    def prometheus(self, prefix: str = "queuekit") -> str:
        """The figures in the Prometheus text exposition format."""
        m = self.snapshot()
        lines: list[str] = []

        def family(
            name: str, kind: str, help_: str, by_type: dict[str, int] | None, total: float
        ) -> None:
            lines.append(f"# HELP {prefix}_{name} {help_}")
            lines.append(f"# TYPE {prefix}_{name} {kind}")
            if by_type:
                for job, count in sorted(by_type.items()):
                    lines.append(f'{prefix}_{name}{{job="{_escape(job)}"}} {count}')
            else:
                lines.append(f"{prefix}_{name} {total:g}")

        family(
            "jobs_queued_total",
            "counter",
            "Jobs dispatched.",
            m["queued_by_type"],
            m["total_queued"],
        )
        family(
            "jobs_completed_total",
            "counter",
            "Jobs completed.",
            m["completed_by_type"],
            m["total_completed"],
        )
        family(
            "jobs_failed_total",
            "counter",
            "Jobs failed for good.",
            m["failed_by_type"],
            m["total_failed"],
        )
        family(
            "jobs_retried_total",
            "counter",
            "Attempts that failed and were retried.",
            m["retried_by_type"],
            m["total_retried"],
        )
        family("jobs_processing", "gauge", "Jobs running now.", None, m["currently_processing"])
        family(
            "job_success_rate",
            "gauge",
            "Completed / (completed + failed).",
            None,
            m["success_rate"],
        )
        family(
            "job_processing_time_ms_avg",
            "gauge",
            "Mean attempt run time in ms.",
            None,
            m["average_processing_time_ms"],
        )
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
