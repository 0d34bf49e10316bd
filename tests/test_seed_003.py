"""The "Testing Queue Jobs" group of seed 003's manual, ported to Python."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import ClassVar

import pytest

from queuekit import QueueJob, QueueManager


class TestJob(QueueJob):
    __test__ = False  # a job class, not a pytest test class
    executed: bool = False
    execution_count: int = 0
    max_retries: ClassVar[int] = 3

    @property
    def display_name(self) -> str:
        return "Test Job"

    async def handle(self) -> None:
        self.executed = True
        self.execution_count += 1
        await asyncio.sleep(0.01)  # simulate work


class FailingJob(QueueJob):
    max_failures: int = 2
    execution_count: int = 0
    succeeded: bool = False
    max_retries: ClassVar[int] = 5

    async def handle(self) -> None:
        self.execution_count += 1
        if self.execution_count <= self.max_failures:
            raise RuntimeError(f"Simulated failure #{self.execution_count}")
        self.succeeded = True


class AlwaysFailingJob(QueueJob):
    execution_count: int = 0
    failed_flag: bool = False
    max_retries: ClassVar[int] = 0

    async def handle(self) -> None:
        self.execution_count += 1
        self.failed_flag = True
        raise RuntimeError("This job always fails")


@pytest.fixture
async def queue_manager() -> AsyncIterator[QueueManager]:
    manager = QueueManager({"queue": {"driver": "memory"}})
    await manager.init()
    yield manager
    await manager.close()


async def test_simple_job_executes_successfully(queue_manager: QueueManager) -> None:
    job = TestJob()
    await queue_manager.dispatch(job)
    await queue_manager.process()
    assert job.executed is True
    assert job.execution_count == 1


async def test_job_with_retry_logic(queue_manager: QueueManager) -> None:
    job = FailingJob(max_failures=2)
    await queue_manager.dispatch(job)
    await queue_manager.process()  # fail 1
    await queue_manager.process()  # fail 2
    await queue_manager.process()  # success
    assert job.execution_count == 3
    assert job.succeeded is True


async def test_delayed_job_execution(queue_manager: QueueManager) -> None:
    job = TestJob()
    await queue_manager.dispatch(job, delay=0.5)
    await queue_manager.process()
    assert job.executed is False, "a delayed job must not run before its delay"
    await asyncio.sleep(0.6)
    await queue_manager.process()
    assert job.executed is True


async def test_batch_job_processing(queue_manager: QueueManager) -> None:
    jobs = [TestJob(), TestJob(), TestJob()]
    await queue_manager.dispatch_batch(jobs)
    for _ in jobs:
        await queue_manager.process()
    assert all(job.executed for job in jobs)


async def test_worker_processes_jobs_correctly(queue_manager: QueueManager) -> None:
    jobs = [TestJob() for _ in range(5)]
    for job in jobs:
        await queue_manager.dispatch(job)
    summary = await queue_manager.start_worker(max_jobs=5, delay=0.01)
    assert all(job.executed for job in jobs)
    assert summary.processed == 5 and summary.completed == 5


async def test_error_handling_in_jobs(queue_manager: QueueManager) -> None:
    job = AlwaysFailingJob()
    await queue_manager.dispatch(job)
    await queue_manager.process()
    assert job.execution_count == 1
    assert job.failed_flag is True
    failed = await queue_manager.failed_jobs()
    assert len(failed) == 1 and "This job always fails" in (failed[0].last_error or "")
    assert await queue_manager.process() is False, "max_retries = 0 means it ran once"
