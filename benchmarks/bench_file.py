"""File driver throughput against Huey's FileHuey, measured in the same run.

Run: ``python benchmarks/bench_file.py`` (N = 10,000 and 100,000; about three minutes) or
``python benchmarks/bench_file.py --quick`` (N = 1,000 and 5,000). ``--fsync on|off|both``
chooses the durability setting measured (default both). Prints a table.

What is measured, for N no-op jobs in a fresh store in a temporary folder:

- dispatch: ``await manager.dispatch(job)`` one by one, each acknowledged before the next;
- drain: one worker (``start_worker(max_jobs=N)``) at concurrency 1, then at concurrency 10;
- per-job cost of dispatch + drain at the large N over the small N (target: within 1.5x);
- Huey's FileHuey at the small N: ``task()`` one by one, then ``dequeue()`` + ``execute()`` in
  one loop (its best case: no consumer threads or polling). FileHuey lists and sorts its queue
  folder on every dequeue, so it is not run at the large N. FileHuey never fsyncs: compare it
  with ``fsync: false``. Target: dispatch and drain >= 2x FileHuey's.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from queuekit import QueueJob, QueueManager


class NoopJob(QueueJob):
    """A job that does nothing: what is measured is the queue."""

    job_name: ClassVar[str] = "bench.file.noop"

    async def handle(self) -> None:
        return None


Row = tuple[str, int, float]  # (measure, jobs, seconds)


async def bench_queuekit(n: int, fsync: bool, folder: Path) -> list[Row]:
    config: dict[str, Any] = {
        "queue": {"driver": "file", "file": {"path": str(folder / "jobs.json"), "fsync": fsync}}
    }
    jobs = [NoopJob() for _ in range(n)]
    rows: list[Row] = []
    gc.collect()
    async with QueueManager(config) as qm:
        started = time.perf_counter()
        for job in jobs:
            await qm.dispatch(job)
        rows.append(("dispatch, one by one", n, time.perf_counter() - started))

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n, concurrency=1)
        rows.append(("drain, concurrency 1", n, time.perf_counter() - started))
        assert summary.completed == n, summary

        started = time.perf_counter()
        for start in range(0, n, 1000):
            await qm.dispatch_batch(jobs[start : start + 1000])
        rows.append(("dispatch_batch of 1,000", n, time.perf_counter() - started))

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n, concurrency=10)
        rows.append(("drain, concurrency 10", n, time.perf_counter() - started))
        assert summary.completed == n, summary
    return rows


def bench_huey(n: int, folder: Path) -> list[Row]:
    from huey import FileHuey

    huey = FileHuey("bench", path=str(folder), immediate=False)

    @huey.task()
    def noop() -> None:
        return None

    rows: list[Row] = []
    gc.collect()
    started = time.perf_counter()
    for _ in range(n):
        noop()
    rows.append(("dispatch, one by one", n, time.perf_counter() - started))
    started = time.perf_counter()
    done = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    rows.append(("drain, one loop", n, time.perf_counter() - started))
    assert done == n, done
    return rows


def per_second(row: Row) -> float:
    return row[1] / row[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 and 5,000")
    parser.add_argument("--fsync", choices=["on", "off", "both"], default="both")
    args = parser.parse_args()
    small, large = (1_000, 5_000) if args.quick else (10_000, 100_000)
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.fsync]
    # A production worker logs per job at INFO; keep the no-op measurement about the queue.
    logging.getLogger("queuekit").setLevel(logging.WARNING)

    print(f"{'system':<28} {'measure':<26} {'N':>8} {'jobs/s':>10} {'us/job':>8}")
    print("-" * 84)
    results: dict[tuple[str, int, str], float] = {}

    def show(system: str, rows: list[Row]) -> None:
        for row in rows:
            name, n, seconds = row
            results[(system, n, name)] = per_second(row)
            print(
                f"{system:<28} {name:<26} {n:>8,} {per_second(row):>10,.0f} "
                f"{seconds / n * 1e6:>8.1f}"
            )

    with tempfile.TemporaryDirectory() as tmp:
        show("huey FileHuey (no fsync)", bench_huey(small, Path(tmp) / "huey"))
    for fsync in settings:
        system = f"queuekit file, fsync {'on' if fsync else 'off'}"
        for n in (small, large):
            with tempfile.TemporaryDirectory() as tmp:
                show(system, asyncio.run(bench_queuekit(n, fsync, Path(tmp))))

    print()
    huey_dispatch = results[("huey FileHuey (no fsync)", small, "dispatch, one by one")]
    huey_drain = results[("huey FileHuey (no fsync)", small, "drain, one loop")]
    for fsync in settings:
        system = f"queuekit file, fsync {'on' if fsync else 'off'}"
        dispatch = results[(system, small, "dispatch, one by one")]
        drain = results[(system, small, "drain, concurrency 1")]
        cost = {
            n: 1 / results[(system, n, "dispatch, one by one")]
            + 1 / results[(system, n, "drain, concurrency 1")]
            for n in (small, large)
        }
        print(
            f"{system}: dispatch {dispatch / huey_dispatch:.2f}x FileHuey's, "
            f"drain {drain / huey_drain:.2f}x FileHuey's (target >= 2x); "
            f"per-job cost at {large:,} / at {small:,} = {cost[large] / cost[small]:.2f} "
            "(target <= 1.5)"
        )


if __name__ == "__main__":
    main()
