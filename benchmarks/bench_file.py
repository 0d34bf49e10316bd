"""File driver throughput against Huey's FileHuey and the bare disk, measured in the same run.

Run: ``python benchmarks/bench_file.py`` (N = 10,000 and 100,000, two rounds; about ten minutes)
or ``python benchmarks/bench_file.py --quick`` (N = 1,000 and 5,000). ``--fsync on|off|both``
chooses the durability setting measured (default both), ``--rounds R`` the number of rounds and
``--dispatch-only`` skips the drains. Prints a table.

The machine this runs on is usually shared, so one measurement can be off by a third either way.
Every system runs once per round, the rounds interleaved, and the table shows the best rate of
each line with the range over the rounds; the ratios compare best with best.

What is measured, for N no-op jobs in a fresh store in a temporary folder:

- dispatch: ``await manager.dispatch(NoopJob())`` one by one, each acknowledged before the next;
  building the job is timed, as it is for Huey's ``task()``;
- drain: one worker (``start_worker(max_jobs=N)``) at concurrency 1, then at concurrency 10;
- per-job cost of dispatch + drain at the large N over the small N (target: within 1.5x);
- Huey's FileHuey at the small N: ``task()`` one by one, then ``dequeue()`` + ``execute()`` in
  one loop (its best case: no consumer threads or polling). FileHuey lists and sorts its queue
  folder on every dequeue, so it is not run at the large N. FileHuey never fsyncs: compare it
  with ``fsync: false``. Target: dispatch and drain >= 2x FileHuey's.
- the disk, at the small N: a bare loop appending one journal-sized line per operation to a
  file in the same folder, without a sync, with ``fdatasync`` and with ``fsync`` after each. One
  by one dispatches with ``fsync: true`` cannot beat the ``fdatasync`` loop, so that line is the
  bound to judge them by.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from queuekit import QueueJob, QueueManager

BATCH = 1_000
LINE = b"x" * 359 + b"\n"  # about the size of one dispatch's journal line


class NoopJob(QueueJob):
    """A job that does nothing: what is measured is the queue."""

    job_name: ClassVar[str] = "bench.file.noop"

    async def handle(self) -> None:
        return None


Row = tuple[str, str, int, float]  # (system, measure, jobs, seconds)


async def bench_queuekit(n: int, fsync: bool, folder: Path, *, drain: bool) -> list[Row]:
    system = f"queuekit file, fsync {'on' if fsync else 'off'}"
    config: dict[str, Any] = {
        "queue": {"driver": "file", "file": {"path": str(folder / "jobs.json"), "fsync": fsync}}
    }
    rows: list[Row] = []
    gc.collect()
    async with QueueManager(config) as qm:
        started = time.perf_counter()
        for _ in range(n):
            await qm.dispatch(NoopJob())
        rows.append((system, "dispatch, one by one", n, time.perf_counter() - started))
        if not drain:
            return rows

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n, concurrency=1)
        rows.append((system, "drain, concurrency 1", n, time.perf_counter() - started))
        assert summary.completed == n, summary

        started = time.perf_counter()
        for start in range(0, n, BATCH):
            await qm.dispatch_batch([NoopJob() for _ in range(min(BATCH, n - start))])
        rows.append((system, "dispatch_batch of 1,000", n, time.perf_counter() - started))

        started = time.perf_counter()
        summary = await qm.start_worker(max_jobs=n, concurrency=10)
        rows.append((system, "drain, concurrency 10", n, time.perf_counter() - started))
        assert summary.completed == n, summary
    return rows


def bench_huey(n: int, folder: Path, *, drain: bool) -> list[Row]:
    from huey import FileHuey

    system = "huey FileHuey (no fsync)"
    huey = FileHuey("bench", path=str(folder), immediate=False)

    @huey.task()
    def noop() -> None:
        return None

    rows: list[Row] = []
    gc.collect()
    started = time.perf_counter()
    for _ in range(n):
        noop()
    rows.append((system, "dispatch, one by one", n, time.perf_counter() - started))
    if not drain:
        return rows
    started = time.perf_counter()
    done = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    rows.append((system, "drain, one loop", n, time.perf_counter() - started))
    assert done == n, done
    return rows


def bench_disk(n: int, folder: Path) -> list[Row]:
    """Append ``n`` lines one at a time with no sync, ``fdatasync`` and ``fsync`` after each."""
    syncs: list[tuple[str, Callable[[int], None] | None]] = [
        ("append, no sync", None),
        ("append + fdatasync", getattr(os, "fdatasync", os.fsync)),
        ("append + fsync", os.fsync),
    ]
    rows: list[Row] = []
    for name, sync in syncs:
        path = folder / f"disk-{len(rows)}.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            started = time.perf_counter()
            for _ in range(n):
                os.write(fd, LINE)
                if sync is not None:
                    sync(fd)
            rows.append(("disk (bare loop)", name, n, time.perf_counter() - started))
        finally:
            os.close(fd)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 and 5,000")
    parser.add_argument("--fsync", choices=["on", "off", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--dispatch-only", action="store_true", help="skip the drains")
    parser.add_argument("--small-only", action="store_true", help="skip the large N")
    args = parser.parse_args()
    small, large = (1_000, 5_000) if args.quick else (10_000, 100_000)
    sizes = [small] if args.small_only else [small, large]
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.fsync]
    drain = not args.dispatch_only
    # A production worker logs per job at INFO; keep the no-op measurement about the queue.
    logging.getLogger("queuekit").setLevel(logging.WARNING)

    runs: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        rows: list[Row] = []
        with tempfile.TemporaryDirectory() as tmp:
            rows += bench_huey(small, Path(tmp) / "huey", drain=drain)
        with tempfile.TemporaryDirectory() as tmp:
            rows += bench_disk(small, Path(tmp))
        for fsync in settings:
            for n in sizes:
                with tempfile.TemporaryDirectory() as tmp:
                    rows += asyncio.run(bench_queuekit(n, fsync, Path(tmp), drain=drain))
        for system, measure, n, seconds in rows:
            runs.setdefault((system, measure, n), []).append(n / seconds)

    print(f"{'system':<28} {'measure':<26} {'N':>8} {'jobs/s':>9} {'us/job':>8} {'range':>15}")
    print("-" * 99)
    best = {key: max(rates) for key, rates in runs.items()}
    for (system, measure, n), rates in runs.items():
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(
            f"{system:<28} {measure:<26} {n:>8,} {max(rates):>9,.0f} {1e6 / max(rates):>8.1f} "
            f"{spread:>15}"
        )

    print()
    huey = "huey FileHuey (no fsync)"
    datasync = best[("disk (bare loop)", "append + fdatasync", small)]
    for fsync in settings:
        system = f"queuekit file, fsync {'on' if fsync else 'off'}"
        dispatch = best[(system, "dispatch, one by one", small)]
        line = f"{system}: dispatch {dispatch / best[(huey, 'dispatch, one by one', small)]:.2f}x"
        if drain:
            drained = best[(system, "drain, concurrency 1", small)]
            line += f", drain {drained / best[(huey, 'drain, one loop', small)]:.2f}x"
        line += " FileHuey's (target >= 2x)"
        if fsync:
            line += f"; dispatch {dispatch / datasync:.2f}x the bare fdatasync loop"
        if drain and large in sizes:
            cost = {
                n: 1 / best[(system, "dispatch, one by one", n)]
                + 1 / best[(system, "drain, concurrency 1", n)]
                for n in sizes
            }
            line += f"; per-job cost at {large:,} / at {small:,} = {cost[large] / cost[small]:.2f}"
            line += " (target <= 1.5)"
        print(line)


if __name__ == "__main__":
    main()
