"""File driver throughput against Huey's FileHuey and the bare disk, measured in the same run.

Run: ``python benchmarks/bench_file.py`` (N = 10,000 and 100,000, three rounds; about ten
minutes) or ``python benchmarks/bench_file.py --quick`` (N = 1,000 and 5,000). ``--fsync
on|off|both`` chooses the durability setting measured (default both), ``--rounds R`` the number
of rounds, ``--small-only`` skips the large N and ``--dispatch-only`` the drains. Prints a table.

The machine this runs on is usually shared, and the disk with it: FileHuey's dispatch (a new
file per task) was measured at anything from 1,700 to 13,000 a second within one run, depending
on what else wrote to the disk at that moment. So one-by-one dispatch, the measure most exposed
to it, is measured **interleaved**: every system dispatches 1,000 jobs in turn until each has
dispatched N, so all of them see the same moments (the unsynced systems together, then the
synced ones, so that FileHuey's file creation never follows another system's fsync). The
table shows the best rate of each line over the rounds with its range; the ratios are the
median, over the rounds, of the ratio measured within each round.

What is measured, for N no-op jobs in a fresh store in a temporary folder:

- dispatch: ``await manager.dispatch(NoopJob())`` one by one, each acknowledged before the next;
  building the job is timed, as it is for Huey's ``task()``;
- drain: one worker (``start_worker(max_jobs=N)``) at concurrency 1, then at concurrency 10,
  after ``dispatch_batch`` of 1,000 at a time;
- per-job cost of dispatch + drain at the large N over the small N (target: within 1.5x);
- Huey's FileHuey at the small N: ``task()`` one by one, then ``dequeue()`` + ``execute()`` in
  one loop (its best case: no consumer threads or polling). FileHuey lists and sorts its queue
  folder on every dequeue, so it is not run at the large N. FileHuey never fsyncs: compare it
  with ``fsync: false``. Target: dispatch and drain >= 2x FileHuey's.
- the disk, interleaved with the dispatches: a bare loop appending one journal-sized line at a
  time to a file in the same folder, without a sync, with ``fdatasync`` and with ``fsync``
  after each; and one overwriting zeros written ahead (as the driver's preallocated journal
  does) with ``fdatasync`` after each. One by one dispatches with ``fsync: true`` cannot beat
  that last loop, so it is the bound to judge them by; its ratio to FileHuey's dispatch is
  printed too, since FileHuey never syncs and the disk's sync alone may not reach 2x it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

from queuekit import QueueJob, QueueManager

BATCH = 1_000
CHUNK = 1_000  # dispatches each system makes in its turn
LINE = b"x" * 359 + b"\n"  # about the size of one dispatch's journal line
HUEY = "huey FileHuey (no fsync)"
DISK = "disk (bare loop)"
PREALLOCATED = "overwrite zeros + fdatasync"
ONE_BY_ONE = "dispatch, one by one"


class NoopJob(QueueJob):
    """A job that does nothing: what is measured is the queue."""

    job_name: ClassVar[str] = "bench.file.noop"

    async def handle(self) -> None:
        return None


Row = tuple[str, str, int, float]  # (system, measure, jobs, seconds)
Turn = Callable[[int], Awaitable[None]]  # makes k dispatches (or disk writes)


def system_name(fsync: bool) -> str:
    return f"queuekit file, fsync {'on' if fsync else 'off'}"


def file_config(folder: Path, fsync: bool) -> dict[str, Any]:
    path = str(folder / "jobs.json")
    return {"queue": {"driver": "file", "file": {"path": path, "fsync": fsync}}}


def make_huey(folder: Path) -> tuple[Any, Callable[[], Any]]:
    from huey import FileHuey

    huey = FileHuey("bench", path=str(folder), immediate=False)

    @huey.task()
    def noop() -> None:
        return None

    return huey, noop


def disk_turns(
    folder: Path, stack: contextlib.AsyncExitStack, n: int
) -> dict[tuple[str, str], Turn]:
    """Bare append loops with no sync, ``fdatasync`` and ``fsync`` after each line, and a loop
    overwriting ``n`` lines' worth of zeros written and synced beforehand."""
    syncs: dict[str, Callable[[int], None] | None] = {
        "append, no sync": None,
        "append + fdatasync": getattr(os, "fdatasync", os.fsync),
        "append + fsync": os.fsync,
    }
    turns: dict[tuple[str, str], Turn] = {}
    for i, (name, sync) in enumerate(syncs.items()):
        fd = os.open(folder / f"disk-{i}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stack.callback(os.close, fd)

        async def turn(k: int, fd: int = fd, sync: Callable[[int], None] | None = sync) -> None:
            for _ in range(k):
                os.write(fd, LINE)
                if sync is not None:
                    sync(fd)

        turns[(DISK, name)] = turn

    fd = os.open(folder / "disk-preallocated.log", os.O_RDWR | os.O_CREAT, 0o644)
    stack.callback(os.close, fd)
    os.pwrite(fd, bytes(len(LINE) * n), 0)
    os.fsync(fd)
    written = [0]

    async def overwrite(k: int) -> None:
        datasync = getattr(os, "fdatasync", os.fsync)
        for _ in range(k):
            os.pwrite(fd, LINE, written[0])
            written[0] += len(LINE)
            datasync(fd)

    turns[(DISK, PREALLOCATED)] = overwrite
    return turns


async def bench_round(
    n: int, settings: list[bool], folder: Path, *, drain: bool, huey: bool = True
) -> list[Row]:
    """One round: interleaved one-by-one dispatch of every system, then each one's drains.

    Unsynced systems (FileHuey, ``fsync: false``, the bare loop without sync) take turns
    together, then synced ones (``fsync: true``, the fdatasync and fsync loops): FileHuey
    creates a file per task, so it never shares its moments with another system's syncs.
    """
    rows: list[Row] = []
    async with contextlib.AsyncExitStack() as stack:
        unsynced: dict[tuple[str, str], Turn] = {}
        synced: dict[tuple[str, str], Turn] = {}
        huey_app = None
        if huey:
            huey_app, noop = make_huey(folder / "huey")

            async def huey_turn(k: int) -> None:
                for _ in range(k):
                    noop()

            unsynced[(HUEY, ONE_BY_ONE)] = huey_turn
            for key, turn in disk_turns(folder, stack, n).items():
                (unsynced if key[1] == "append, no sync" else synced)[key] = turn
        managers: dict[bool, QueueManager] = {}
        for fsync in settings:
            (folder / str(fsync)).mkdir()
            qm = await stack.enter_async_context(
                QueueManager(file_config(folder / str(fsync), fsync))
            )
            managers[fsync] = qm

            async def qk_turn(k: int, qm: QueueManager = qm) -> None:
                for _ in range(k):
                    await qm.dispatch(NoopJob())

            (synced if fsync else unsynced)[(system_name(fsync), ONE_BY_ONE)] = qk_turn

        for turns in (unsynced, synced):
            spent = dict.fromkeys(turns, 0.0)
            gc.collect()
            for start in range(0, n, CHUNK):
                k = min(CHUNK, n - start)
                for key, turn in turns.items():
                    started = time.perf_counter()
                    await turn(k)
                    spent[key] += time.perf_counter() - started
            rows += [(system, measure, n, seconds) for (system, measure), seconds in spent.items()]
        if not drain:
            return rows

        if huey_app is not None:
            rows.append(drain_huey(huey_app, n))
        for fsync, qm in managers.items():
            rows += await drain_queuekit(qm, n, system_name(fsync))
    return rows


def drain_huey(huey: Any, n: int) -> Row:
    gc.collect()
    started = time.perf_counter()
    done = 0
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    assert done == n, done
    return (HUEY, "drain, one loop", n, time.perf_counter() - started)


async def drain_queuekit(qm: QueueManager, n: int, system: str) -> list[Row]:
    rows: list[Row] = []
    gc.collect()
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 and 5,000")
    parser.add_argument("--fsync", choices=["on", "off", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--small-only", action="store_true", help="skip the large N")
    parser.add_argument("--dispatch-only", action="store_true", help="skip the drains")
    args = parser.parse_args()
    small, large = (1_000, 5_000) if args.quick else (10_000, 100_000)
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.fsync]
    drain = not args.dispatch_only
    # A production worker logs per job at INFO; keep the no-op measurement about the queue.
    logging.getLogger("queuekit").setLevel(logging.WARNING)

    runs: dict[tuple[str, str, int], list[float]] = {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            rows = asyncio.run(bench_round(small, settings, Path(tmp), drain=drain))
        if not args.small_only:
            for fsync in settings:  # alone: FileHuey is not run at the large N
                with tempfile.TemporaryDirectory() as tmp:
                    rows += asyncio.run(
                        bench_round(large, [fsync], Path(tmp), drain=drain, huey=False)
                    )
        for system, measure, n, seconds in rows:
            runs.setdefault((system, measure, n), []).append(n / seconds)

    print(f"{'system':<28} {'measure':<28} {'N':>8} {'jobs/s':>9} {'us/job':>8} {'range':>17}")
    print("-" * 103)
    for (system, measure, n), rates in sorted(runs.items(), key=lambda kv: kv[0][0] != HUEY):
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(
            f"{system:<28} {measure:<28} {n:>8,} {max(rates):>9,.0f} {1e6 / max(rates):>8.1f} "
            f"{spread:>17}"
        )
    print()

    def ratio(a: tuple[str, str, int], b: tuple[str, str, int]) -> str:
        """Median (and range) over the rounds of a's rate over b's in the same round."""
        ratios = [x / y for x, y in zip(runs[a], runs[b], strict=True)]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    for fsync in settings:
        system = system_name(fsync)
        mine = (system, ONE_BY_ONE, small)
        line = f"{system}: dispatch {ratio(mine, (HUEY, ONE_BY_ONE, small))}"
        if drain:
            line += ", drain " + ratio(
                (system, "drain, concurrency 1", small), (HUEY, "drain, one loop", small)
            )
        line += " FileHuey's (target >= 2x)"
        if fsync:
            line += f"; dispatch {ratio(mine, (DISK, 'append + fdatasync', small))}"
            line += " the bare append + fdatasync loop's, "
            line += f"{ratio(mine, (DISK, PREALLOCATED, small))} the {PREALLOCATED} loop's"
        print(line)
        if fsync:
            bound = ratio((DISK, PREALLOCATED, small), (HUEY, ONE_BY_ONE, small))
            print(f"  the bound: the {PREALLOCATED} loop runs at {bound} FileHuey's dispatch")
        if drain and not args.small_only:
            cost = {
                n: statistics.median(
                    1 / d + 1 / r
                    for d, r in zip(
                        runs[(system, ONE_BY_ONE, n)],
                        runs[(system, "drain, concurrency 1", n)],
                        strict=True,
                    )
                )
                for n in (small, large)
            }
            print(
                f"  per-job cost of dispatch + drain at {large:,} / at {small:,}: "
                f"{cost[large] / cost[small]:.2f} (target <= 1.5)"
            )


if __name__ == "__main__":
    main()
