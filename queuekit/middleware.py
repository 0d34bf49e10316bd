"""Lifecycle hooks: cross-cutting behaviour (metrics, callbacks, logging) listens here.

The runner announces each step of a job's life once, through ``Hooks``; nothing else in the worker
knows about metrics or callbacks. A hook may be a plain method or a coroutine function, and a hook
that raises is logged and never stops the job or the worker.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .job import QueueJob
    from .record import JobRecord
    from .runner import Execution

__all__ = ["CallbackMiddleware", "Hooks", "LoggingMiddleware", "Middleware", "Outcome"]

log = logging.getLogger("queuekit")
#: One line per job start (DEBUG), completion (INFO), retry (WARNING) and failure (ERROR).
job_log = logging.getLogger("queuekit.jobs")


class Outcome(StrEnum):
    """How one attempt of a job ended; decided in one place, the runner."""

    #: ``handle()`` returned; the job was deleted.
    COMPLETED = "completed"
    #: The attempt failed and the job was put back for a later retry.
    RETRIED = "retried"
    #: The job failed for good and moved to the failed store.
    FAILED = "failed"
    #: A worker stopping handed the job back unfinished; the attempt does not count.
    RELEASED = "released"
    #: The lease was lost (it ran out and another worker may hold the job): result dropped.
    ABANDONED = "abandoned"


class Middleware:
    """Base class of lifecycle listeners; override the hooks you need (sync or ``async``).

    Example::

        class Timing(Middleware):
            def after_job(self, execution):
                statsd.timing(execution.record.job_name, execution.duration)

        manager = QueueManager(config, middleware=[Timing()])
    """

    def after_dispatch(self, records: list[JobRecord]) -> Any:
        """Called after records were stored by ``dispatch`` or ``dispatch_batch``."""

    def before_job(self, execution: Execution) -> Any:
        """Called before ``handle()`` runs; ``execution.job`` is the rebuilt job."""

    def after_job(self, execution: Execution) -> Any:
        """Called once per reserved job with ``execution.outcome`` decided."""

    def on_worker_error(self, error: BaseException) -> Any:
        """Called when the worker loop itself meets an error (e.g. the backend is down)."""


_HOOKS = ("after_dispatch", "before_job", "after_job", "on_worker_error")


class Hooks:
    """The listeners of one manager or worker, called in order, each guarded."""

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self.middleware: tuple[Middleware, ...] = tuple(middleware)
        # Keep only overridden hooks, so a job pays for the listeners that exist and no more.
        self._bound: dict[str, tuple[Callable[..., Any], ...]] = {
            name: tuple(
                getattr(m, name)
                for m in self.middleware
                if getattr(type(m), name) is not getattr(Middleware, name)
            )
            for name in _HOOKS
        }

    def extended(self, more: Iterable[Middleware]) -> Hooks:
        """These hooks followed by ``more``."""
        return Hooks((*self.middleware, *more))

    async def emit(self, hook: str, *args: Any) -> None:
        """Call every listener of ``hook``; log and swallow what one raises."""
        for fn in self._bound[hook]:
            try:
                result = fn(*args)
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("queuekit: %s listener %r raised; ignored", hook, fn)

    def has(self, hook: str) -> bool:
        """True if any listener overrides ``hook``."""
        return bool(self._bound[hook])


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


_ERROR_OUTCOMES = (Outcome.RETRIED, Outcome.FAILED)


class CallbackMiddleware(Middleware):
    """Adapts ``start_worker``'s callbacks (sync or async) to lifecycle hooks.

    ``on_job_error(job, error)`` is called for every failed attempt, retried or final; ``job`` is
    None when the stored job could not be rebuilt (unknown type, invalid payload).
    """

    def __init__(
        self,
        *,
        on_job_start: Callable[[QueueJob], Any] | None = None,
        on_job_complete: Callable[[QueueJob, Any], Any] | None = None,
        on_job_error: Callable[[QueueJob | None, BaseException], Any] | None = None,
        on_error: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self.on_job_start = on_job_start
        self.on_job_complete = on_job_complete
        self.on_job_error = on_job_error
        self.on_error = on_error

    async def before_job(self, execution: Execution) -> None:
        """Call ``on_job_start(job)``."""
        if self.on_job_start is not None and execution.job is not None:
            await _call(self.on_job_start, execution.job)

    async def after_job(self, execution: Execution) -> None:
        """Call ``on_job_complete`` or ``on_job_error`` by outcome."""
        if execution.outcome is Outcome.COMPLETED:
            if self.on_job_complete is not None:
                await _call(self.on_job_complete, execution.job, execution.result)
        elif self.on_job_error is not None and execution.outcome in _ERROR_OUTCOMES:
            await _call(self.on_job_error, execution.job, execution.error)

    async def on_worker_error(self, error: BaseException) -> None:
        """Call ``on_error(error)``."""
        if self.on_error is not None:
            await _call(self.on_error, error)


class LoggingMiddleware(Middleware):
    """Logs each job's start, end and failure on the ``queuekit.jobs`` logger."""

    def before_job(self, execution: Execution) -> None:
        """Log the start at DEBUG."""
        if job_log.isEnabledFor(logging.DEBUG):
            r = execution.record
            job_log.debug("start %s %s (attempt %d)", r.job_name, r.id, r.attempts)

    def after_job(self, execution: Execution) -> None:
        """Log the outcome: INFO for completed, WARNING for retried, ERROR for failed."""
        r = execution.record
        outcome = execution.outcome
        if outcome is Outcome.COMPLETED:
            if job_log.isEnabledFor(logging.INFO):
                job_log.info("done %s %s in %.1f ms", r.job_name, r.id, execution.duration * 1000)
        elif outcome is Outcome.FAILED:
            job_log.error("failed %s %s for good: %s", r.job_name, r.id, _headline(execution.error))
        elif outcome is Outcome.RETRIED:
            job_log.warning(
                "retry %s %s after attempt %d: %s",
                r.job_name,
                r.id,
                r.attempts,
                _headline(execution.error),
            )
        else:
            job_log.warning("%s %s %s", outcome.value, r.job_name, r.id)


def _headline(error: BaseException | None) -> str:
    if error is None:
        return ""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
