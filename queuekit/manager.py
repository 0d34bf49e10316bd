"""``QueueManager``: the application's entry point. It wires config, driver, registry, runner,
workers and metrics together; the work itself is done by those modules.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any

from pydantic_core import PydanticSerializationError

from .clock import new_id, now, to_seconds
from .config import QueueConfig
from .drivers import create_driver, register_driver
from .drivers.base import Capability, QueueDriver, QueueStats
from .errors import DuplicateJobError, PayloadError, QueueError
from .job import QueueJob
from .metrics import MetricsCollector
from .middleware import CallbackMiddleware, Hooks, LoggingMiddleware, Middleware, Outcome
from .portal import LoopPortal, running_loop
from .record import JobRecord
from .registry import JobRegistry, default_registry
from .runner import JobRunner
from .worker import Worker, WorkerOptions, WorkerSummary

__all__ = ["QueueManager"]

Seconds = float | int | timedelta


class QueueManager:
    """Dispatches jobs to the configured driver and runs workers over it.

    Example::

        async with QueueManager({"queue": {"driver": "memory"}}) as qm:
            await qm.dispatch(WelcomeEmailJob(user_email="a@b.c", user_name="Ann"))
            summary = await qm.start_worker(max_jobs=1)

    ``QueueManager()`` with no config uses the memory driver. ``registry`` defaults to
    ``queuekit.default_registry``; ``middleware`` adds lifecycle listeners to every worker;
    ``driver`` supplies a connected driver instance instead of building one from the config
    (the caller then connects and closes it).
    """

    #: ``QueueManager.register_driver(name, factory)``, the same as ``queuekit.register_driver``.
    register_driver = staticmethod(register_driver)

    def __init__(
        self,
        config: QueueConfig | dict[str, Any] | None = None,
        *,
        registry: JobRegistry | None = None,
        middleware: Iterable[Middleware] = (),
        driver: QueueDriver | None = None,
    ) -> None:
        self.config = QueueConfig.parse(config)
        self.default_driver_name: str = self.config.queue.driver
        self.registry = registry if registry is not None else default_registry
        self.metrics = MetricsCollector()
        self.hooks = Hooks([self.metrics, LoggingMiddleware(), *middleware])
        # A driver handed in is the caller's: it is connected and closed by them, not by us.
        self._owns_driver = driver is None
        if driver is not None:
            self.default_driver_name = driver.name
        else:
            driver = create_driver(
                self.default_driver_name, self.config.driver_options(self.default_driver_name)
            )
        self.driver: QueueDriver = driver
        self._runner = self._make_runner(self.hooks)
        self._initialized = False
        self._init_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._portal = LoopPortal()
        self._workers: set[Worker] = set()
        self._queue_of: dict[type, str] = {}

    # -- life cycle ----------------------------------------------------------------------

    async def init(self) -> QueueManager:
        """Connect the driver (create tables, files, scripts). Safe to call more than once."""
        if self._initialized:
            return self
        # Several first calls may race here (dispatch_sync from many threads lands them all on
        # one loop): the lock makes sure the driver connects once.
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._initialized:
                if self._owns_driver:
                    await self.driver.connect()
                self._loop = asyncio.get_running_loop()
                self._initialized = True
        return self

    async def close(self) -> None:
        """Stop background workers gracefully and close the driver."""
        for worker in list(self._workers):
            await worker.stop()
        self._workers.clear()
        if self._initialized:
            self._initialized = False
            if self._owns_driver:
                await self.driver.close()

    async def __aenter__(self) -> QueueManager:
        return await self.init()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- dispatching ---------------------------------------------------------------------

    def _default_queue(self, cls: type[QueueJob]) -> str:
        queue = self._queue_of.get(cls)
        if queue is None:
            # A class that never set ``queue`` goes to the configured default queue.
            declares = any("queue" in k.__dict__ for k in cls.__mro__ if k is not QueueJob)
            queue = cls.queue if declares else self.config.queue.default_queue
            self._queue_of[cls] = queue
        return queue

    def _payload(self, job: QueueJob) -> dict[str, Any]:
        cls = type(job)
        try:
            if cls.to_json is QueueJob.to_json:
                # What QueueJob.to_json returns, without two Python calls in between; pydantic's
                # JSON mode guarantees JSON-safe output.
                payload = cls.__pydantic_serializer__.to_python(job, mode="json")
            else:
                # A custom to_json guarantees nothing: prove its output encodes.
                payload = job.to_json()
                json.dumps(payload)
        except (PydanticSerializationError, TypeError, ValueError) as e:
            raise PayloadError(
                f"payload of job type {cls.job_name!r} cannot be serialized to JSON: {e}"
            ) from e
        if not isinstance(payload, dict):
            raise PayloadError(
                f"{cls.__name__}.to_json() must return a dict, got {type(payload).__name__}"
            )
        return payload

    def make_record(
        self,
        job: QueueJob,
        *,
        delay: Seconds | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> JobRecord:
        """The ``JobRecord`` that ``dispatch`` would store for ``job``, validated.

        Raises ``TypeError`` for a non-``QueueJob``, ``ValueError`` for a negative delay and
        ``PayloadError`` for a payload that cannot be serialized.
        """
        if not isinstance(job, QueueJob):
            raise TypeError(f"dispatch() takes a QueueJob instance, got {type(job).__name__}")
        cls = type(job)
        created = now()
        available = created if delay is None else created + to_seconds(delay, name="delay")
        timeout = cls.timeout
        # Positional: this runs for every dispatched job, and keywords cost more than the
        # rest of the record's construction (see JobRecord for the field order).
        return JobRecord(
            new_id(),  # id
            cls.job_name,  # job_name
            self._payload(job),  # payload
            queue or self._default_queue(cls),  # queue
            cls.priority if priority is None else int(priority),  # priority
            0,  # attempts
            cls.max_retries,  # max_retries
            None if timeout is None else float(timeout),  # timeout
            created,  # created_at
            available,  # available_at
            None,  # reserved_until
            None,  # lease_token
            job.unique_key(),  # unique_key
            None,  # last_error
            None,  # failed_at
            {},  # meta
            job if self.driver.keeps_instances else None,  # instance
        )

    async def dispatch(
        self,
        job: QueueJob,
        *,
        delay: Seconds | None = None,
        queue: str | None = None,
        priority: int | None = None,
        connection: Any = None,
    ) -> str:
        """Queue ``job`` and return its id.

        ``delay`` (seconds or ``timedelta``) holds it back; ``queue`` and ``priority`` override
        the class settings. ``connection`` writes the job inside the caller's open transaction on
        drivers with the ``TRANSACTIONAL`` capability. On the sync driver the job runs before
        this returns. A unique job whose key is pending raises ``DuplicateJobError``.
        """
        record = self.make_record(job, delay=delay, queue=queue, priority=priority)
        await self.init()
        if Capability.INLINE in self.driver.capabilities:
            return await self._run_inline(record)
        options = self._push_options(connection)
        if not await self.driver.push(record, **options):
            raise DuplicateJobError(
                f"{record.job_name}: a job with unique key {record.unique_key!r} is still pending"
            )
        await self.hooks.emit("after_dispatch", [record])
        return record.id

    async def dispatch_batch(
        self,
        jobs: Sequence[QueueJob],
        *,
        delay: Seconds | None = None,
        queue: str | None = None,
        connection: Any = None,
    ) -> list[str]:
        """Queue several jobs; all or nothing on drivers with ``ATOMIC_BATCH``.

        Every job is validated before anything is stored. Returns the ids in order.
        """
        records = [self.make_record(job, delay=delay, queue=queue) for job in jobs]
        if not records:
            return []
        await self.init()
        if Capability.INLINE in self.driver.capabilities:
            return [await self._run_inline(record) for record in records]
        await self.driver.push_many(records, **self._push_options(connection))
        await self.hooks.emit("after_dispatch", records)
        return [record.id for record in records]

    def _push_options(self, connection: Any) -> dict[str, Any]:
        if connection is None:
            return {}
        if Capability.TRANSACTIONAL not in self.driver.capabilities:
            raise QueueError(
                f"driver {self.default_driver_name!r} cannot dispatch inside a caller's "
                "transaction (connection=...)"
            )
        return {"connection": connection}

    async def _run_inline(self, record: JobRecord) -> str:
        await self.driver.push(record)
        await self.hooks.emit("after_dispatch", [record])
        while True:
            leased = await self.driver.reserve([record.queue], lease=self.driver.default_lease)
            if leased is None:
                raise QueueError(f"sync driver lost job {record.job_name} {record.id}")
            execution = await self._runner.run(leased)
            if execution.outcome is Outcome.COMPLETED:
                return record.id
            if execution.outcome is Outcome.FAILED and execution.error is not None:
                raise execution.error

    def dispatch_sync(self, job: QueueJob, **options: Any) -> str:
        """``dispatch`` for synchronous code (Flask, Django, scripts) with no running loop.

        If the manager was initialised on an event loop that is running in another thread, the
        dispatch runs there; otherwise it runs on a private loop in a daemon thread that the
        manager starts on first use and stops in ``close_sync()``. Called from inside a running
        event loop it raises ``RuntimeError``: use ``await dispatch()`` there.
        """
        if running_loop() is not None:
            raise RuntimeError(
                "dispatch_sync() called inside a running event loop; use `await dispatch()`"
            )
        coro = self.dispatch(job, **options)
        home = self._loop
        if home is not None and home.is_running() and not home.is_closed():
            return asyncio.run_coroutine_threadsafe(coro, home).result()
        return self._portal.call(coro)

    def close_sync(self) -> None:
        """Close a manager used only through ``dispatch_sync``."""
        if self._portal.started:
            self._portal.call(self.close())
            self._portal.stop()

    # -- running jobs --------------------------------------------------------------------

    def _make_runner(self, hooks: Hooks) -> JobRunner:
        return JobRunner(
            self.driver,
            self.registry,
            hooks,
            manager=self,
            default_timeout=self.config.queue.worker.job_timeout,
        )

    async def process(self, *, queues: Sequence[str] | None = None) -> bool:
        """Run at most one job that is available now, without waiting.

        True if a job ran (whatever its outcome), False if none was available.
        """
        await self.init()
        record = await self.driver.reserve(
            None if queues is None else list(queues), lease=self.driver.default_lease
        )
        if record is None:
            return False
        await self._runner.run(record)
        return True

    async def start_worker(
        self,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        max_jobs: int | None = None,
        delay: Seconds | None = None,
        timeout: Seconds | None = None,
        run_in_background: bool = False,
        on_job_start: Callable[..., Any] | None = None,
        on_job_complete: Callable[..., Any] | None = None,
        on_job_error: Callable[..., Any] | None = None,
        on_error: Callable[..., Any] | None = None,
    ) -> WorkerSummary | Worker:
        """Run a worker over ``queues`` (None = every queue).

        Arguments left as None take the ``queue.worker`` config. ``max_jobs`` stops after that
        many jobs; ``delay`` pauses after each job; ``timeout`` stops after that much wall time
        (seconds or ``timedelta``). Callbacks may be sync or async; one that raises is logged and
        never stops the worker. In the foreground, returns a ``WorkerSummary`` when the worker
        stops; with ``run_in_background=True``, returns the running ``Worker`` at once.
        """
        await self.init()
        defaults = self.config.queue.worker
        options = WorkerOptions(
            queues=None if queues is None else tuple(queues),
            concurrency=defaults.concurrency if concurrency is None else concurrency,
            max_jobs=defaults.max_jobs if max_jobs is None else max_jobs,
            delay=defaults.delay if delay is None else to_seconds(delay, name="delay"),
            timeout=defaults.timeout if timeout is None else to_seconds(timeout, name="timeout"),
            idle_wait=defaults.idle_wait,
            grace=defaults.grace,
            job_timeout=defaults.job_timeout,
        )
        runner = self._runner
        callbacks = (on_job_start, on_job_complete, on_job_error, on_error)
        if any(cb is not None for cb in callbacks):
            runner = self._make_runner(
                self.hooks.extended(
                    [
                        CallbackMiddleware(
                            on_job_start=on_job_start,
                            on_job_complete=on_job_complete,
                            on_job_error=on_job_error,
                            on_error=on_error,
                        )
                    ]
                )
            )
        if options.concurrency > 1:
            runner = runner.with_batched_acks(limit=options.concurrency)
        worker = Worker(self.driver, runner, options)
        if not run_in_background:
            return await worker.run()
        self._workers.add(worker)
        worker.start()
        return worker

    # -- inspecting ----------------------------------------------------------------------

    def get_metrics(self) -> dict[str, Any]:
        """This process's job counters and rates (see ``MetricsCollector.snapshot``)."""
        return self.metrics.snapshot()

    def reset_metrics(self) -> None:
        """Set every metric back to zero."""
        self.metrics.reset()

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        """The driver's counts per queue (``pending``, ``delayed``, ``reserved``, ``failed``),
        shared by every process using the same store."""
        await self.init()
        return await self.driver.stats(queues)

    async def failed_jobs(self, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Records in the failed store, oldest failure first."""
        await self.init()
        return await self.driver.failed(queue=queue, limit=limit)

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        """Queue failed jobs again (all when ``ids`` is None); returns how many."""
        await self.init()
        return await self.driver.retry_failed(ids)

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        """Delete failed jobs (all when ``ids`` is None); returns how many."""
        await self.init()
        return await self.driver.forget_failed(ids)

    async def purge(self, queue: str) -> int:
        """Delete every pending and delayed job of ``queue``; returns how many."""
        await self.init()
        return await self.driver.purge(queue)
