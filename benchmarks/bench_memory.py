"""Memory driver throughput: dispatch, batch dispatch, drain, and the worker loop's per-job cost.

Run: ``python benchmarks/bench_memory.py [--jobs N]``. Prints a table; targets from the core
issue are dispatch >= 100,000 jobs/s and drain with one worker >= 40,000 jobs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import ClassVar

from queuekit import QueueJob, QueueManager


class NoopJob(QueueJob):
    """A job that does nothing: what is measured is queuekit itself."""

    job_name: ClassVar[str] = "bench.noop"

    async def handle(self) -> None:
        return None


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}"


async def bench(n: int) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    jobs = [NoopJob() for _ in range(n)]
    gc.collect()

    async with QueueManager({"queue": {"driver": "memory"}}) as qm:
        # Logging of every job would dominate a no-op; a production worker logs at WARNING.
        started = time.perf_counter()
        for job in jobs:
            await qm.dispatch(job)
        dispatch = time.perf_counter() - started
        rows.append(("dispatch (one by one)", rate(n, dispatch), f"{dispatch / n * 1e6:8.2f}"))

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n)
        drain = time.perf_counter() - started
        assert summary.completed == n, summary
        rows.append(("drain, 1 worker, concurrency 1", rate(n, drain), f"{drain / n * 1e6:8.2f}"))

        started = time.perf_counter()
        await qm.dispatch_batch(jobs)
        batch = time.perf_counter() - started
        rows.append(("dispatch_batch", rate(n, batch), f"{batch / n * 1e6:8.2f}"))

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n, concurrency=10)
        drain10 = time.perf_counter() - started
        assert summary.completed == n, summary
        rows.append(
            ("drain, 1 worker, concurrency 10", rate(n, drain10), f"{drain10 / n * 1e6:8.2f}")
        )

    # The floor: calling handle() directly, with no queue at all.
    started = time.perf_counter()
    for job in jobs:
        await job.handle()
    floor = time.perf_counter() - started
    overhead = (drain - floor) / n * 1e6
    rows.append(("handle() called directly (floor)", rate(n, floor), f"{floor / n * 1e6:8.2f}"))
    rows.append(("worker loop overhead per job", "", f"{overhead:8.2f}"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    args = parser.parse_args()
    rows = asyncio.run(bench(args.jobs))
    print(f"memory driver, N = {args.jobs:,} no-op jobs")
    print(f"{'measure':<34} {'jobs/s':>12} {'us/job':>8}")
    print("-" * 56)
    for name, jobs_per_s, us in rows:
        print(f"{name:<34} {jobs_per_s:>12} {us:>8}")


if __name__ == "__main__":
    main()
