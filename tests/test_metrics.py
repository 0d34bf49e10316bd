"""The metrics collector: figures, rates, Prometheus text, thread safety."""

from __future__ import annotations

import threading
from typing import ClassVar

from queuekit import QueueJob, QueueManager
from queuekit.metrics import MetricsCollector
from queuekit.testing import make_record


class Ok(QueueJob):
    async def handle(self) -> None:
        return None


class Bad(QueueJob):
    max_retries: ClassVar[int] = 1

    async def handle(self) -> None:
        raise RuntimeError("bad")


async def test_metrics_after_a_mixed_run() -> None:
    async with QueueManager() as qm:
        for _ in range(3):
            await qm.dispatch(Ok())
        await qm.dispatch(Bad())
        summary = await qm.start_worker(max_jobs=5)
        assert summary.processed == 5
        m = qm.get_metrics()
        assert m["total_queued"] == 4
        assert (m["total_completed"], m["total_failed"], m["total_retried"]) == (3, 1, 1)
        assert m["currently_processing"] == 0
        assert m["success_rate"] == 0.75 and m["failure_rate"] == 0.25
        assert m["average_processing_time_ms"] >= 0
        assert m["queued_by_type"] == {Ok.job_name: 3, Bad.job_name: 1}
        assert m["completed_by_type"] == {Ok.job_name: 3}
        assert m["failed_by_type"] == {Bad.job_name: 1}
        qm.reset_metrics()
        assert qm.get_metrics()["total_queued"] == 0 and qm.get_metrics()["success_rate"] == 0.0
        assert qm.metrics is qm.metrics  # the collector itself is public


async def test_prometheus_text() -> None:
    async with QueueManager() as qm:
        await qm.dispatch(Ok())
        await qm.process()
        text = qm.metrics.prometheus()
        assert "# TYPE queuekit_jobs_completed_total counter" in text
        assert f'queuekit_jobs_completed_total{{job="{Ok.job_name}"}} 1' in text
        assert "queuekit_jobs_processing 0" in text
        assert text.endswith("\n")


def test_collector_is_thread_safe() -> None:
    collector = MetricsCollector()
    record = make_record()

    def hammer() -> None:
        for _ in range(5000):
            collector.after_dispatch([record])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert collector.snapshot()["total_queued"] == 20000
