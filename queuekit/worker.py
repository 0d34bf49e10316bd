"""The worker loop: reserve jobs, run them under a concurrency limit, renew leases, stop cleanly.

One loop polls the driver and starts jobs; ``JobRunner`` runs each one; stop conditions are
decided in one method (``_stop_reason``). Lifecycle listeners (metrics, callbacks) hang off the
runner's hooks, not off this loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from .drivers.base import Capability, QueueDriver
from .record import JobRecord
from .runner import Execution, JobRunner
from .worker_options import StopReason, WorkerOptions, WorkerSummary

__all__ = ["StopReason", "Worker", "WorkerOptions", "WorkerSummary"]

log = logging.getLogger("queuekit.worker")

_MAX_BACKOFF = 5.0


class Worker:
    """A worker bound to one driver; ``QueueManager.start_worker()`` builds and runs it.

    Example (background)::

        worker = await manager.start_worker(concurrency=4, run_in_background=True)
        ...
        await worker.stop()          # graceful: no new jobs, running ones finish within grace
        print(worker.summary)
    """

    def __init__(self, driver: QueueDriver, runner: JobRunner, options: WorkerOptions) -> None:
        self.driver = driver
        self.runner = runner
        self.options = options
        self.summary = WorkerSummary()
        self._lease = options.lease or driver.default_lease
        self._queues: Sequence[str] | None = options.queues
        self._running = False
        self._stopping = False
        self._taken = 0
        # A job's task is "running" until handle() returns, then "settling" while its outcome
        # is written; the slot frees at the switch, so the next reservation overlaps the ack.
        self._running_tasks: set[asyncio.Task[None]] = set()
        self._pausing: set[asyncio.Task[None]] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        self._executions: dict[str, Execution] = {}
        self._loop_task: asyncio.Task[WorkerSummary] | None = None
        self._cancelled_by_stop = False
        self._inline: Execution | None = None
        self._wakeup = asyncio.Event()
        # At concurrency 1, a driver that acknowledges a job and reserves the next one in one
        # round trip (it overrides complete_and_reserve) is asked to do both at once. Otherwise
        # overlapping the acknowledgement with the next reservation pays off when settling is a
        # round trip to a store; for in-process drivers the extra task would only cost time.
        self._combine_acks = (
            type(driver).complete_and_reserve is not QueueDriver.complete_and_reserve
        )
        self._overlap_acks = Capability.PERSISTENT in driver.capabilities

    @property
    def running(self) -> bool:
        """True from start until the loop has stopped and running jobs have settled."""
        return self._running

    # -- starting and stopping -----------------------------------------------------------

    def start(self) -> Worker:
        """Run the loop in a background task and return at once."""
        self._running = True
        self._loop_task = asyncio.ensure_future(self.run())
        return self

    async def wait(self) -> WorkerSummary:
        """Wait for a background worker to stop; returns its summary."""
        if self._loop_task is None:
            raise RuntimeError("worker was not started in the background")
        return await asyncio.shield(self._loop_task)

    async def stop(self, graceful: bool = True) -> WorkerSummary:
        """Stop taking jobs; graceful lets running jobs finish within ``grace`` seconds.

        Jobs still running after that (or at once, when not graceful) are cancelled and handed
        back to the queue, their attempt uncounted.
        """
        self._stopping = True
        self._wakeup.set()
        if not graceful:
            self._cancel_running()
        if self._loop_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop_task), self.options.grace + 1.0)
            except TimeoutError:
                self._cancel_running()
                await asyncio.shield(self._loop_task)
        return self.summary

    def _cancel_running(self) -> None:
        # Only jobs still in handle(): an acknowledgement in flight is left to finish.
        for task in self._running_tasks:
            task.cancel()
        if self._inline is not None and self._loop_task is not None:
            # With concurrency 1 the job runs inside the loop task itself.
            self._cancelled_by_stop = True
            self._loop_task.cancel()

    # -- the loop --------------------------------------------------------------------------

    async def run(self) -> WorkerSummary:
        """Run in the foreground until a stop condition; returns the summary."""
        if self._loop_task is None:
            self._loop_task = asyncio.current_task()  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.timeout if self.options.timeout else None
        self._running = True
        keeper = asyncio.create_task(self._keep_leases())
        try:
            await self._loop(deadline)
        except asyncio.CancelledError:
            if not self._cancelled_by_stop:
                raise
            self.summary.stop_reason = StopReason.STOPPED
        finally:
            await self._drain()
            keeper.cancel()
            self._running = False
        return self.summary

    def _stop_reason(self, at: float, deadline: float | None) -> StopReason | None:
        if self._stopping:
            return StopReason.STOPPED
        if self.options.max_jobs is not None and self._taken >= self.options.max_jobs:
            return StopReason.MAX_JOBS
        if deadline is not None and at >= deadline:
            return StopReason.TIMEOUT
        return None

    async def _loop(self, deadline: float | None) -> None:
        loop = asyncio.get_running_loop()
        concurrency = self.options.concurrency
        max_jobs = self.options.max_jobs
        errors = 0
        while True:
            at = loop.time()
            reason = self._stop_reason(at, deadline)
            if reason is not None:
                self.summary.stop_reason = reason
                return
            free = concurrency - len(self._running_tasks) - len(self._pausing)
            if free <= 0 or len(self._settling) >= 2 * concurrency:
                # Wait for a slot; also bound acknowledgements in flight if the backend lags.
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            if max_jobs is not None:
                free = min(free, max_jobs - self._taken)
            wait = self.options.idle_wait
            if deadline is not None:
                wait = min(wait, max(deadline - at, 0.0))
            try:
                if free == 1:
                    record = await self.driver.reserve(self._queues, lease=self._lease, wait=wait)
                    records = [] if record is None else [record]
                else:
                    records = await self.driver.reserve_many(
                        self._queues, lease=self._lease, limit=free, wait=wait
                    )
                errors = 0
            except Exception as e:
                errors += 1
                await self._worker_error(e, errors)
                continue
            if self._stopping:
                # stop() came while the reservation was in flight: these jobs are not started.
                await self._give_back(records)
                continue
            if concurrency == 1:
                # Each job may come back with the next one, leased along with its completion.
                record = records[0] if records else None
                while record is not None:
                    self._taken += 1
                    record = await self._run_inline(record, deadline)
                continue
            for record in records:
                self._taken += 1
                self._running_tasks.add(asyncio.create_task(self._run_one(record)))
            if records:
                # Let the jobs just leased start before the next reservation is prepared: their
                # start, not the loop's bookkeeping, is what a waiting dispatcher sees.
                await asyncio.sleep(0)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running_tasks.discard(task)
        self._pausing.discard(task)
        self._settling.discard(task)
        self._slot_freed.set()

    async def _execute(self, execution: Execution) -> Execution:
        """Run the job of ``execution`` (not yet settled); a cancelled one is counted here."""
        record = execution.record
        self._executions[record.id] = execution
        try:
            await self.runner.execute(record, execution)
        except asyncio.CancelledError:
            self._executions.pop(record.id, None)
            self.summary.count(execution.outcome)
            raise
        return execution

    async def _run_inline(self, record: JobRecord, deadline: float | None) -> JobRecord | None:
        """Concurrency 1: run the job in the loop task itself (no task to create per job).

        Returns the next job when its reservation rode along with this job's completion.
        """
        execution = self._inline = Execution(record)
        try:
            await self._execute(execution)
        finally:
            self._inline = None
        if self.options.delay:
            await self._pause(self.options.delay)
        if self._combine_acks:
            return await self._settle_and_take(execution, deadline)
        if self._overlap_acks:
            task = asyncio.create_task(self._settle(execution))
            self._settling.add(task)
            task.add_done_callback(self._done)
        else:
            await self._settle(execution)
        return None

    async def _settle_and_take(
        self, execution: Execution, deadline: float | None
    ) -> JobRecord | None:
        """Settle the job; a completion also leases the next job, in one driver call.

        A job that retries or fails settles as usual, and the loop reserves the next one.
        """
        if self._stop_reason(asyncio.get_running_loop().time(), deadline) is not None:
            # Stopping after this job (max_jobs, stop(), timeout): reserve nothing it won't run.
            await self._settle(execution)
            return None
        taken: list[JobRecord] = []
        combined = False

        async def complete_and_reserve(record: JobRecord) -> bool:
            nonlocal combined
            combined = True
            completed, records = await self.driver.complete_and_reserve(
                record, self._queues, lease=self._lease, limit=1
            )
            taken.extend(records)
            return completed

        record = execution.record
        try:
            await self.runner.settle(execution, complete=complete_and_reserve)
        except Exception as e:
            if not combined:  # releasing or failing the job failed, as in _settle
                await self._settle_failed(execution, e)
                self._executions.pop(record.id, None)
                return None
            # Whether the completion was stored is unknown, and no job was leased: acknowledge
            # alone (a second completion of a stored one is refused, never doubled).
            log.warning(
                "queuekit: completing %s %s with the next reservation failed (%s: %s); "
                "completing it alone",
                record.job_name,
                record.id,
                type(e).__name__,
                e,
            )
            await self.runner.hooks.emit("on_worker_error", e)
            await self._give_back(taken)
            await self._settle(execution)
            return None
        self.summary.count(execution.outcome)
        self._executions.pop(record.id, None)
        if taken and self._stopping:
            await self._give_back(taken)
            return None
        return taken[0] if taken else None

    async def _give_back(self, records: Sequence[JobRecord]) -> None:
        """Hand back jobs reserved but never started, their attempt uncounted."""
        for record in records:
            record.attempts = max(0, record.attempts - 1)
            try:
                await self.driver.release(record, delay=0.0)
            except Exception as e:
                # Its lease runs out and another worker takes it: it is late, not lost.
                await self.runner.hooks.emit("on_worker_error", e)
                log.warning(
                    "queuekit: handing back unstarted job %s %s failed: %s: %s",
                    record.job_name,
                    record.id,
                    type(e).__name__,
                    e,
                )

    async def _run_one(self, record: JobRecord) -> None:
        """Concurrency > 1: run the job in its own task; the slot frees when handle() ends."""
        task = asyncio.current_task()
        assert task is not None
        task.add_done_callback(self._done)
        execution = await self._execute(Execution(record))
        self._running_tasks.discard(task)  # handle() is over: a hard stop no longer cancels it
        if self.options.delay:
            # The slot stays taken while the worker pauses after the job.
            self._pausing.add(task)
            await self._pause(self.options.delay)
            self._pausing.discard(task)
        self._settling.add(task)
        self._slot_freed.set()
        await self._settle(execution)

    async def _settle(self, execution: Execution) -> None:
        record = execution.record
        try:
            await self.runner.settle(execution)
        except Exception as e:
            await self._settle_failed(execution, e)
        else:
            self.summary.count(execution.outcome)
        finally:
            self._executions.pop(record.id, None)

    async def _settle_failed(self, execution: Execution, error: Exception) -> None:
        # The runner settles what the job does; what reaches here is the backend failing while
        # settling. The lease will expire and the job run again: nothing is lost.
        record = execution.record
        await self.runner.hooks.emit("on_worker_error", error)
        log.error(
            "queuekit: settling job %s %s failed",
            record.job_name,
            record.id,
            exc_info=(type(error), error, error.__traceback__),
        )

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds`` unless a stop arrives first."""
        if self._stopping:
            return
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _worker_error(self, error: Exception, consecutive: int) -> None:
        log.warning("queuekit worker: %s: %s (retrying)", type(error).__name__, error)
        await self.runner.hooks.emit("on_worker_error", error)
        # Back off on repeated errors (a backend that is down) instead of spinning.
        await self._pause(min(0.05 * 2 ** min(consecutive, 10), _MAX_BACKOFF))

    async def _drain(self) -> None:
        if self._running_tasks:
            _, pending = await asyncio.wait(set(self._running_tasks), timeout=self.options.grace)
            for task in pending:
                task.cancel()
        # Every task ends here: cancelled jobs hand themselves back, acks finish.
        tasks = self._running_tasks | self._pausing | self._settling
        if tasks:
            await asyncio.wait(tasks)

    async def _keep_leases(self) -> None:
        """Renew the lease of every running job about every third of the lease."""
        interval = max(self._lease / 3.0, 0.01)
        while True:
            await asyncio.sleep(interval)
            for execution in list(self._executions.values()):
                if execution.lease_lost or execution.settling or execution.outcome is not None:
                    continue
                try:
                    renewed = await self.driver.extend(execution.record, lease=self._lease)
                    # A job whose ack raced this renewal is done, not lost: only flag jobs
                    # still inside handle().
                    if not renewed and not execution.settling:
                        execution.lease_lost = True
                        log.warning(
                            "queuekit: lost the lease of %s %s; its result will be dropped",
                            execution.record.job_name,
                            execution.record.id,
                        )
                except Exception as e:
                    await self.runner.hooks.emit("on_worker_error", e)
