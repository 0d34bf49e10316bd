"""``JobRunner``: runs one reserved job and settles it with the driver.

The runner is the one place that decides a job's outcome (completed, retried, failed, handed back,
abandoned). The worker loop, ``QueueManager.process()`` and the sync driver all go through it.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .errors import JobTimeout, MaxAttemptsExceeded, PayloadError, PermanentError, Retry
from .job import JobContext, QueueJob, attach_context
from .middleware import Hooks, Outcome
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .drivers.base import QueueDriver
    from .manager import QueueManager
    from .record import JobRecord
    from .registry import JobRegistry

__all__ = ["Execution", "JobRunner", "describe_error"]

_MAX_ERROR_CHARS = 8000


@dataclass(slots=True, eq=False)
class Execution:
    """One run of one reserved job, as lifecycle hooks see it.

    ``job`` is None when the stored job could not be rebuilt. ``duration`` is in seconds.
    ``lease_lost`` is set by the worker when renewing the lease failed; ``settling`` is True
    once ``handle()`` is over and the outcome is being written.
    """

    record: JobRecord
    job: QueueJob | None = None
    outcome: Outcome | None = None
    error: BaseException | None = None
    result: Any = None
    started: bool = False
    duration: float = 0.0
    lease_lost: bool = False
    settling: bool = False


def describe_error(error: BaseException) -> str:
    """What ``last_error`` stores: a ``Type: message`` first line, then the traceback, bounded.

    The first line alone says what went wrong, for tables and alerts; the traceback is for a
    person debugging it.
    """
    message = str(error).strip()
    head = type(error).__name__ + (f": {message.splitlines()[0]}" if message else "")
    trace = "".join(traceback.format_exception(error)).rstrip()
    room = _MAX_ERROR_CHARS - len(head) - 1
    if len(trace) > room:
        trace = "...\n" + trace[-(room - 4) :]
    return f"{head}\n{trace}"


_is_async_cache: dict[type, bool] = {}


def _handle_is_async(job: QueueJob) -> bool:
    cls = type(job)
    known = _is_async_cache.get(cls)
    if known is None:
        known = _is_async_cache[cls] = inspect.iscoroutinefunction(cls.handle)
    return known


async def _call_maybe_async(fn: Any, *args: Any) -> Any:
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await asyncio.to_thread(fn, *args)
    if inspect.isawaitable(result):
        result = await result
    return result


class JobRunner:
    """Runs reserved records: rebuild, run under a timeout, then complete/retry/fail.

    ``default_timeout`` applies to records without a ``timeout`` of their own.
    """

    def __init__(
        self,
        driver: QueueDriver,
        registry: JobRegistry,
        hooks: Hooks,
        *,
        manager: QueueManager | None = None,
        default_timeout: float | None = None,
    ) -> None:
        self.driver = driver
        self.registry = registry
        self.hooks = hooks
        self.manager = manager
        self.default_timeout = default_timeout
        self._complete = driver.complete

    def with_batched_acks(self, limit: int = 100) -> JobRunner:
        """A runner like this one whose completions are batched (for concurrent workers)."""
        from .acks import AckBatcher

        runner = JobRunner(
            self.driver,
            self.registry,
            self.hooks,
            manager=self.manager,
            default_timeout=self.default_timeout,
        )
        runner._complete = AckBatcher(self.driver, limit).complete
        return runner

    async def run(self, record: JobRecord, execution: Execution | None = None) -> Execution:
        """Run ``record`` once and settle it; returns the ``Execution`` with its outcome.

        Never raises for what the job does; a ``CancelledError`` (the worker stopping hard) hands
        the job back to the queue with the attempt uncounted, then propagates.
        """
        execution = await self.execute(record, execution)
        return await self.settle(execution)

    async def execute(self, record: JobRecord, execution: Execution | None = None) -> Execution:
        """First half of ``run``: rebuild the job and run ``handle()``; ``settle`` does the rest.

        A worker may start its next job while the previous one settles (its acknowledgement is
        then in flight beside the next reservation). Records that cannot run at all (unknown
        type, bad payload, too many attempts) are settled here already.
        """
        execution = execution or Execution(record)
        job = await self._rebuild(execution)
        if job is None:
            return execution
        if record.attempts > record.max_retries + 1:
            # Reserved more often than its retries allow: earlier attempts died with their worker.
            execution.error = MaxAttemptsExceeded(
                f"job {record.job_name} {record.id} was reserved {record.attempts} times, "
                f"more than 1 + max_retries={record.max_retries} "
                "(its worker died or lost the lease)"
            )
            await self._fail(execution)
            return execution

        attach_context(
            job,
            JobContext(
                job_id=record.id,
                attempt=record.attempts,
                max_retries=record.max_retries,
                queue=record.queue,
                enqueued_at=record.created_at,
                manager=self.manager,
            ),
        )
        execution.started = True
        await self.hooks.emit("before_job", execution)
        start = time.perf_counter()
        try:
            execution.result = await self._invoke(job, record)
        except asyncio.CancelledError:
            execution.duration = time.perf_counter() - start
            await self._hand_back(execution)
            raise
        except Exception as e:
            execution.error = e
        execution.duration = time.perf_counter() - start
        return execution

    async def settle(
        self,
        execution: Execution,
        *,
        complete: Callable[[JobRecord], Awaitable[bool]] | None = None,
    ) -> Execution:
        """Second half of ``run``: complete, retry or fail the job with the driver, then tell
        the lifecycle listeners how it ended.

        ``complete`` replaces the driver's ``complete`` for this job only (a worker passes one
        that also reserves its next job); it is not called when the job retries or fails.
        """
        execution.settling = True
        if execution.outcome is None:
            if execution.lease_lost:
                execution.outcome = Outcome.ABANDONED
            elif execution.error is None:
                completed = await (complete or self._complete)(execution.record)
                execution.outcome = Outcome.COMPLETED if completed else Outcome.ABANDONED
            else:
                assert execution.job is not None
                await self._settle_error(execution, execution.job)
        await self.hooks.emit("after_job", execution)
        return execution

    async def _rebuild(self, execution: Execution) -> QueueJob | None:
        """The job object to run, or None after failing a record that cannot be rebuilt."""
        record = execution.record
        if record.instance is not None:
            execution.job = record.instance
            return record.instance
        try:
            cls = self.registry.resolve(record.job_name)
            try:
                job = cls.from_json(record.payload)
            except ValidationError as e:
                raise PayloadError(
                    f"payload of job type {record.job_name!r} (id {record.id}) "
                    f"fails validation: {e}"
                ) from e
            except Exception as e:
                raise PayloadError(
                    f"payload of job type {record.job_name!r} (id {record.id}) cannot be rebuilt: "
                    f"{type(e).__name__}: {e}"
                ) from e
        except Exception as e:
            # Retrying cannot fix an unknown type or a bad payload: straight to the failed store,
            # where the record is kept for a human to inspect.
            execution.error = e
            await self._fail(execution, call_hook=False)
            return None
        execution.job = job
        return job

    async def _invoke(self, job: QueueJob, record: JobRecord) -> Any:
        timeout = record.timeout if record.timeout is not None else self.default_timeout
        if _handle_is_async(job):
            if timeout is None:
                return await job.handle()
            try:
                async with asyncio.timeout(timeout) as scope:
                    return await job.handle()
            except TimeoutError:
                if scope.expired():
                    raise JobTimeout(
                        f"{record.job_name} {record.id} ran past its timeout of {timeout:g}s"
                    ) from None
                raise
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        future = loop.run_in_executor(None, ctx.run, job.handle)
        if timeout is None:
            return await future
        done, _ = await asyncio.wait({future}, timeout=timeout)
        if not done:
            # A thread cannot be killed: the attempt counts as timed out, the thread finishes alone.
            raise JobTimeout(
                f"{record.job_name} {record.id} ran past its timeout of {timeout:g}s "
                "(sync handle: its thread was left to finish)"
            )
        return future.result()

    async def _settle_error(self, execution: Execution, job: QueueJob) -> None:
        """Like Laravel's handleJobException: retry while retries remain, else fail."""
        record, error = execution.record, execution.error
        assert error is not None
        if isinstance(error, PermanentError) or record.attempts > record.max_retries:
            await self._fail(execution)
            return
        if isinstance(error, Retry):
            delay = error.delay
        else:
            delay = RetryPolicy.for_job(type(job)).delay_for(record.attempts)
        released = await self.driver.release(record, delay=delay, error=describe_error(error))
        execution.outcome = Outcome.RETRIED if released else Outcome.ABANDONED

    async def _fail(self, execution: Execution, *, call_hook: bool = True) -> None:
        error = execution.error
        assert error is not None
        failed = await self.driver.fail(execution.record, describe_error(error))
        execution.outcome = Outcome.FAILED if failed else Outcome.ABANDONED
        if failed and call_hook and execution.job is not None:
            try:
                await _call_maybe_async(execution.job.failed, error)
            except Exception:
                from .middleware import log

                log.exception("queuekit: %s.failed() raised; ignored", type(execution.job).__name__)

    async def _hand_back(self, execution: Execution) -> None:
        record = execution.record
        record.attempts = max(0, record.attempts - 1)
        try:
            released = await self.driver.release(record, delay=0.0)
        except Exception:
            released = False
        execution.outcome = Outcome.RELEASED if released else Outcome.ABANDONED
        await self.hooks.emit("after_job", execution)
