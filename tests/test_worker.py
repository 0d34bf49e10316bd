"""The worker loop: stop conditions, callbacks, concurrency, leases, timeouts, graceful stop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest

from queuekit import (
    JobTimeout,
    PermanentError,
    QueueJob,
    QueueManager,
    Retry,
    StopReason,
    Worker,
)
from queuekit.drivers.memory import MemoryDriver
from queuekit.testing import make_record


class Sleeper(QueueJob):
    seconds: float = 0.0
    result: str = "ok"
    ran: ClassVar[list[str]] = []
    active: ClassVar[int] = 0
    peak: ClassVar[int] = 0

    async def handle(self) -> str:
        Sleeper.active += 1
        Sleeper.peak = max(Sleeper.peak, Sleeper.active)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            Sleeper.active -= 1
        Sleeper.ran.append(self.context.queue)
        return self.result


class Flaky(QueueJob):
    failures: int = 1
    calls: int = 0
    max_retries: ClassVar[int] = 3

    async def handle(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError(f"flaky #{self.calls}")


class Permanent(QueueJob):
    calls: int = 0
    failed_with: list[str] = []

    async def handle(self) -> None:
        self.calls += 1
        raise PermanentError("card declined")

    async def failed(self, error: BaseException) -> None:
        self.failed_with.append(str(error))


class AsksRetry(QueueJob):
    async def handle(self) -> None:
        raise Retry(delay=60, reason="rate limited")


class SlowAsync(QueueJob):
    timeout: ClassVar[float | None] = 0.2
    max_retries: ClassVar[int] = 0

    async def handle(self) -> None:
        await asyncio.sleep(10)


class SyncJob(QueueJob):
    thread: str = ""
    sleep: float = 0.0
    timeout: ClassVar[float | None] = None
    max_retries: ClassVar[int] = 0

    def handle(self) -> None:
        self.thread = threading.current_thread().name
        time.sleep(self.sleep)


class SlowSyncJob(SyncJob):
    timeout: ClassVar[float | None] = 0.1


class Context(QueueJob):
    seen: dict[str, Any] = {}

    async def handle(self) -> None:
        ctx = self.context
        self.seen.update(
            job_id=ctx.job_id,
            attempt=self.attempt,
            queue=ctx.queue,
            manager=ctx.manager,
            max_retries=ctx.max_retries,
            enqueued_at=ctx.enqueued_at,
        )


@pytest.fixture(autouse=True)
def _reset_sleeper() -> None:
    Sleeper.ran.clear()
    Sleeper.active = Sleeper.peak = 0


@pytest.fixture
async def qm() -> AsyncIterator[QueueManager]:
    manager = QueueManager({"queue": {"worker": {"idle_wait": 0.05, "grace": 5}}})
    await manager.init()
    yield manager
    await manager.close()


async def test_max_jobs_stops_the_worker(qm: QueueManager) -> None:
    for _ in range(5):
        await qm.dispatch(Sleeper())
    summary = await qm.start_worker(max_jobs=3)
    assert summary.stop_reason is StopReason.MAX_JOBS
    assert (summary.processed, summary.completed) == (3, 3)
    assert (await qm.stats())["default"]["pending"] == 2


async def test_timeout_stops_an_idle_worker(qm: QueueManager) -> None:
    started = time.monotonic()
    summary = await qm.start_worker(timeout=0.3)
    assert summary.stop_reason is StopReason.TIMEOUT
    assert 0.25 <= time.monotonic() - started < 10


async def test_delay_pauses_after_each_job(qm: QueueManager) -> None:
    for _ in range(3):
        await qm.dispatch(Sleeper())
    started = time.monotonic()
    await qm.start_worker(max_jobs=3, delay=0.1)
    assert time.monotonic() - started >= 0.2


async def test_idle_worker_does_not_spin(qm: QueueManager) -> None:
    calls = 0
    original = qm.driver.reserve

    async def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await original(*args, **kwargs)

    qm.driver.reserve = counting  # type: ignore[method-assign]
    qm.config.queue.worker.idle_wait = 0.2
    await qm.start_worker(timeout=0.5)
    assert calls <= 6, f"an idle worker polled {calls} times in 0.5 s"


async def test_callbacks_sync_and_async(qm: QueueManager) -> None:
    events: list[tuple[str, Any]] = []

    async def on_start(job: QueueJob) -> None:
        events.append(("start", type(job).__name__))

    def on_complete(job: QueueJob, result: Any) -> None:
        events.append(("complete", result))

    def on_job_error(job: QueueJob, error: BaseException) -> None:
        events.append(("error", str(error)))

    await qm.dispatch(Sleeper(result="R"))
    await qm.dispatch(Flaky(failures=1))
    summary = await qm.start_worker(
        max_jobs=3, on_job_start=on_start, on_job_complete=on_complete, on_job_error=on_job_error
    )
    assert summary.completed == 2 and summary.retried == 1
    assert ("complete", "R") in events
    assert ("error", "flaky #1") in events
    assert events.count(("start", "Flaky")) == 2


async def test_a_raising_callback_never_kills_the_worker(qm: QueueManager, caplog) -> None:
    def boom(*args: Any) -> None:
        raise ValueError("callback bug")

    for _ in range(3):
        await qm.dispatch(Sleeper())
    summary = await qm.start_worker(max_jobs=3, on_job_start=boom, on_job_complete=boom)
    assert summary.completed == 3
    assert "callback bug" in caplog.text


async def test_worker_survives_backend_errors_and_reports_them(qm: QueueManager) -> None:
    errors: list[BaseException] = []
    original = qm.driver.reserve
    failures = iter([ConnectionError("backend down"), ConnectionError("still down")])

    async def flaky_reserve(*args: Any, **kwargs: Any) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return await original(*args, **kwargs)

    qm.driver.reserve = flaky_reserve  # type: ignore[method-assign]
    await qm.dispatch(Sleeper())
    summary = await qm.start_worker(max_jobs=1, on_error=errors.append, timeout=20)
    assert summary.completed == 1
    assert [str(e) for e in errors] == ["backend down", "still down"]


async def test_concurrency_runs_jobs_side_by_side(qm: QueueManager) -> None:
    for _ in range(8):
        await qm.dispatch(Sleeper(seconds=0.2))
    started = time.monotonic()
    summary = await qm.start_worker(max_jobs=8, concurrency=4)
    assert summary.completed == 8
    assert Sleeper.peak == 4
    assert time.monotonic() - started < 1.5  # two rounds of 0.2 s, far from eight


async def test_queues_restrict_the_worker(qm: QueueManager) -> None:
    await qm.dispatch(Sleeper(), queue="b")
    await qm.dispatch(Sleeper(), queue="a")
    summary = await qm.start_worker(queues=["a"], timeout=0.3)
    assert summary.completed == 1 and Sleeper.ran == ["a"]
    assert (await qm.stats(["b"]))["b"]["pending"] == 1


async def test_background_worker_graceful_stop_lets_running_job_finish(qm: QueueManager) -> None:
    await qm.dispatch(Sleeper(seconds=0.3))
    worker = await qm.start_worker(run_in_background=True)
    assert isinstance(worker, Worker) and worker.running
    await asyncio.sleep(0.1)
    summary = await worker.stop()
    assert summary.completed == 1 and summary.stop_reason is StopReason.STOPPED
    assert not worker.running


async def test_stop_past_grace_hands_the_job_back_uncounted() -> None:
    async with QueueManager({"queue": {"worker": {"grace": 0.1, "idle_wait": 0.05}}}) as qm:
        job = Sleeper(seconds=30)
        await qm.dispatch(job)
        worker = await qm.start_worker(run_in_background=True)
        await asyncio.sleep(0.1)
        summary = await asyncio.wait_for(worker.stop(), 10)
        assert summary.released == 1 and summary.completed == 0
        stats = (await qm.stats())["default"]
        assert stats["pending"] == 1 and stats["reserved"] == 0
        record = await qm.driver.reserve(None, lease=30)
        assert record is not None and record.attempts == 1, "the interrupted attempt is not counted"


async def test_hard_stop_hands_back_at_once(qm: QueueManager) -> None:
    await qm.dispatch(Sleeper(seconds=30))
    await qm.dispatch(Sleeper(seconds=30))
    worker = await qm.start_worker(run_in_background=True, concurrency=2)
    await asyncio.sleep(0.1)
    summary = await asyncio.wait_for(worker.stop(graceful=False), 5)
    assert summary.released == 2
    assert (await qm.stats())["default"]["pending"] == 2


async def test_long_job_keeps_its_lease() -> None:
    async with QueueManager({"queue": {"memory": {"retry_after": 0.3}}}) as qm:
        await qm.dispatch(Sleeper(seconds=1.0))
        worker = await qm.start_worker(run_in_background=True, max_jobs=1)
        await asyncio.sleep(0.6)  # two lease lengths: without renewal the job would be reclaimed
        assert await qm.driver.reserve(None, lease=30) is None
        summary = await asyncio.wait_for(worker.wait(), 10)
        assert summary.completed == 1 and summary.abandoned == 0


class LosingDriver(MemoryDriver):
    async def extend(self, record, *, lease):  # type: ignore[no-untyped-def]
        return False


async def test_a_lost_lease_abandons_the_job_instead_of_completing_it() -> None:
    driver = LosingDriver({"retry_after": 0.2})
    async with QueueManager(driver=driver) as qm:
        await qm.dispatch(Sleeper(seconds=0.5))
        summary = await asyncio.wait_for(qm.start_worker(max_jobs=1), 10)
        assert summary.abandoned == 1 and summary.completed == 0
        # The job was not deleted by the worker that lost it: it runs again.
        again = await driver.reserve(None, lease=30)
        assert again is not None and again.attempts == 2


async def test_async_timeout_cancels_and_counts_as_failed(qm: QueueManager) -> None:
    await qm.dispatch(SlowAsync())
    started = time.monotonic()
    summary = await qm.start_worker(max_jobs=1)
    assert time.monotonic() - started < 5
    assert summary.failed == 1
    (failed,) = await qm.failed_jobs()
    assert "JobTimeout" in (failed.last_error or "") and "0.2s" in (failed.last_error or "")


async def test_sync_handle_runs_in_a_thread(qm: QueueManager) -> None:
    job = SyncJob()
    await qm.dispatch(job)
    await qm.process()
    assert job.thread and job.thread != threading.current_thread().name


async def test_sync_handle_timeout_is_recorded_and_thread_left_running(qm: QueueManager) -> None:
    job = SlowSyncJob(sleep=0.5)
    await qm.dispatch(job)
    started = time.monotonic()
    await qm.process()
    assert time.monotonic() - started < 0.45, "the worker does not wait for the stuck thread"
    (failed,) = await qm.failed_jobs()
    assert "sync handle" in (failed.last_error or "")
    assert isinstance(JobTimeout("x"), TimeoutError)
    await asyncio.sleep(0.6)  # let the thread finish before the loop closes


async def test_permanent_error_fails_at_once_and_calls_failed_once(qm: QueueManager) -> None:
    job = Permanent(failed_with=[])
    await qm.dispatch(job)
    assert await qm.process() is True
    assert await qm.process() is False
    assert job.calls == 1 and job.failed_with == ["card declined"]
    assert len(await qm.failed_jobs()) == 1


async def test_retry_exception_uses_its_delay(qm: QueueManager) -> None:
    await qm.dispatch(AsksRetry())
    await qm.process()
    stats = (await qm.stats())["default"]
    assert stats["delayed"] == 1 and stats["pending"] == 0


async def test_retry_delay_policy_holds_the_retry_back(qm: QueueManager) -> None:
    class Delayed(Flaky):
        retry_delay: ClassVar[float] = 60

    await qm.dispatch(Delayed(failures=1))
    await qm.process()
    assert (await qm.stats())["default"]["delayed"] == 1
    assert await qm.process() is False


async def test_context_inside_handle(qm: QueueManager) -> None:
    job = Context(seen={})
    job_id = await qm.dispatch(job, queue="ctx")
    await qm.process()
    assert job.seen["job_id"] == job_id and job.seen["attempt"] == 1
    assert job.seen["queue"] == "ctx" and job.seen["manager"] is qm
    assert job.seen["max_retries"] == 3 and job.seen["enqueued_at"] <= time.time()


async def test_context_outside_handle_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="only available while it runs"):
        _ = Context().context


async def test_too_many_reservations_fail_without_running(qm: QueueManager) -> None:
    job = Sleeper()
    record = qm.make_record(job)
    record.attempts = 5  # four earlier workers died holding it; max_retries is 3
    await qm.driver.push(record)
    assert await qm.process() is True
    assert Sleeper.ran == []
    (failed,) = await qm.failed_jobs()
    assert "MaxAttemptsExceeded" in (failed.last_error or "")


async def test_max_jobs_with_concurrency_takes_exactly_that_many(qm: QueueManager) -> None:
    for _ in range(10):
        await qm.dispatch(Sleeper(seconds=0.05))
    summary = await qm.start_worker(max_jobs=7, concurrency=3)
    assert summary.processed == 7
    assert (await qm.stats())["default"]["pending"] == 3


def test_make_record_helper_is_public() -> None:
    assert make_record(3).payload == {"n": 3}


# -- one job at a time: the completion carries the next reservation ---------------------------


class CountingDriver(MemoryDriver):
    """Counts the calls a one-at-a-time worker makes; can fail or stop the worker mid-call."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, int] = {"complete_and_reserve": 0, "complete": 0, "reserve": 0}
        self.fail_combined = False
        self.after_combined: asyncio.Event | None = None

    async def complete_and_reserve(self, record, queues, *, lease, limit=1, wait=0.0):  # type: ignore[no-untyped-def]
        self.calls["complete_and_reserve"] += 1
        if self.fail_combined:
            raise ConnectionError("backend hiccup")
        result = await super().complete_and_reserve(
            record, queues, lease=lease, limit=limit, wait=wait
        )
        if self.after_combined is not None:
            self.after_combined.set()
            await asyncio.sleep(0.05)  # the stop() waiting on the event runs meanwhile
        return result

    async def complete(self, record):  # type: ignore[no-untyped-def]
        self.calls["complete"] += 1
        return await super().complete(record)

    async def reserve(self, queues, *, lease, wait=0.0):  # type: ignore[no-untyped-def]
        self.calls["reserve"] += 1
        return await super().reserve(queues, lease=lease, wait=wait)


async def test_each_completion_reserves_the_next_job_and_the_last_reserves_none() -> None:
    driver = CountingDriver()
    async with QueueManager(driver=driver) as qm:
        for _ in range(5):
            await qm.dispatch(Sleeper())
        await qm.dispatch(Flaky(failures=5))  # its retry goes through release() as usual
        await qm.dispatch(Sleeper())
        summary = await asyncio.wait_for(qm.start_worker(max_jobs=7), 10)
        assert (summary.completed, summary.retried) == (6, 1)
        # Jobs 1-5 each bring the next; the retried job settles alone, so the loop reserves
        # job 7, which completes alone: max_jobs is reached, so nothing more is reserved.
        assert driver.calls == {"complete_and_reserve": 5, "complete": 1, "reserve": 2}
        stats = (await qm.stats())["default"]
        assert (stats["pending"] + stats["delayed"], stats["reserved"]) == (1, 0), "the retry"


async def test_max_jobs_leaves_the_rest_unleased() -> None:
    driver = CountingDriver()
    async with QueueManager(driver=driver) as qm:
        for _ in range(5):
            await qm.dispatch(Sleeper())
        summary = await asyncio.wait_for(qm.start_worker(max_jobs=3), 10)
        assert summary.completed == 3
        stats = (await qm.stats())["default"]
        assert (stats["pending"], stats["reserved"]) == (2, 0)


async def test_a_stop_during_a_job_reserves_no_next_one() -> None:
    driver = CountingDriver()
    async with QueueManager(driver=driver) as qm:
        for _ in range(3):
            await qm.dispatch(Sleeper(seconds=0.3))
        worker = await qm.start_worker(run_in_background=True)
        await asyncio.sleep(0.1)
        summary = await asyncio.wait_for(worker.stop(), 10)
        assert summary.completed == 1
        assert driver.calls["complete_and_reserve"] == 0
        stats = (await qm.stats())["default"]
        assert (stats["pending"], stats["reserved"]) == (2, 0)


async def test_a_job_reserved_as_the_stop_arrives_is_handed_back_uncounted() -> None:
    driver = CountingDriver()
    driver.after_combined = asyncio.Event()
    async with QueueManager(driver=driver) as qm:
        await qm.dispatch(Sleeper())
        second = await qm.dispatch(Sleeper())
        worker = await qm.start_worker(run_in_background=True)
        assert isinstance(worker, Worker)
        await asyncio.wait_for(driver.after_combined.wait(), 10)
        summary = await asyncio.wait_for(worker.stop(), 10)
        assert (summary.completed, summary.released) == (1, 0)
        stats = (await qm.stats())["default"]
        assert (stats["pending"], stats["reserved"]) == (1, 0)
        record = await driver.reserve(None, lease=30)
        assert record is not None and record.id == second and record.attempts == 1


async def test_a_failing_combined_call_completes_the_job_alone() -> None:
    driver = CountingDriver()
    driver.fail_combined = True
    errors: list[BaseException] = []
    async with QueueManager(driver=driver) as qm:
        for _ in range(2):
            await qm.dispatch(Sleeper())
        summary = await asyncio.wait_for(qm.start_worker(max_jobs=2, on_error=errors.append), 10)
        assert summary.completed == 2 and len(Sleeper.ran) == 2, "each job ran once"
        assert [str(e) for e in errors] == ["backend hiccup"]
        assert driver.calls["complete"] == 2
        stats = (await qm.stats())["default"]
        assert (stats["pending"], stats["reserved"]) == (0, 0)


async def test_a_persistent_driver_completes_and_reserves_in_one_call(tmp_path: Any) -> None:
    from queuekit.drivers.database.sqlite import SQLiteDriver

    calls: list[str] = []

    class Watched(SQLiteDriver):
        async def complete_and_reserve(self, record, queues, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(record.id)
            return await super().complete_and_reserve(record, queues, **kwargs)

    driver = Watched({"url": f"sqlite:///{tmp_path}/jobs.db"})
    await driver.connect()
    try:
        async with QueueManager(driver=driver) as qm:
            for _ in range(3):
                await qm.dispatch(Sleeper())
            summary = await asyncio.wait_for(qm.start_worker(max_jobs=3), 10)
            assert summary.completed == 3 and len(calls) == 2
    finally:
        await driver.close()


async def test_a_failing_release_is_reported_once_and_not_sent_again() -> None:
    class ReleaseFails(CountingDriver):
        releases = 0

        async def release(self, record, *, delay=0.0, error=None):  # type: ignore[no-untyped-def]
            ReleaseFails.releases += 1
            raise ConnectionError("release lost")

    driver = ReleaseFails()
    errors: list[BaseException] = []
    async with QueueManager(driver=driver) as qm:
        await qm.dispatch(Flaky(failures=1))
        summary = await asyncio.wait_for(
            qm.start_worker(max_jobs=2, on_error=errors.append, timeout=1), 10
        )
        assert summary.processed == 0
        assert ReleaseFails.releases == 1
        assert [str(e) for e in errors] == ["release lost"]
        assert driver.calls["complete_and_reserve"] == 0
