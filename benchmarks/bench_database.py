"""Benchmark of the database driver: dispatch and drain of no-op jobs, beside peers.

For each backend: dispatch N jobs one by one, then as batches of 1,000, and drain each lot with
one worker process at concurrency 1 and at concurrency 10. Huey's SqliteHuey runs beside SQLite in
the same run (its consumer with 1 and 10 worker threads). Prints one table.

    python benchmarks/bench_database.py              # N = 10,000, every backend
    python benchmarks/bench_database.py --quick      # N = 1,000
    python benchmarks/bench_database.py --only sqlite
    python benchmarks/bench_database.py --only sqlite --repeat 3   # medians and ranges

On a shared or loaded machine one run can be off by a third either way, for the peers as much as
for queuekit: ``--repeat`` runs every backend (peers included) several times, interleaved, and
prints the median rate of each line with its range; ratios compare medians.

Drain time is measured inside the worker process, from its first reservation to its last job,
so process start-up is not counted (for Huey: first task started to last task completed).

Adding a backend: write ``def my_backend(n: int) -> list[Row]`` (use ``queuekit_rows`` with the
backend's config dict, plus any peers) and add it to ``BACKENDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from queuekit import QueueManager
from queuekit.job import QueueJob

BATCH = 1_000
_SELF = (sys.executable, os.path.abspath(__file__))
MYSQL_URL = os.environ.get("QUEUEKIT_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


class Noop(QueueJob):
    """The job every benchmark dispatches: it does nothing."""

    job_name: ClassVar[str] = "bench.noop"

    async def handle(self) -> None:
        return None


@dataclass
class Row:
    """One measured line of the table."""

    backend: str
    system: str
    operation: str
    jobs: int
    seconds: float

    @property
    def rate(self) -> float:
        """Jobs per second."""
        return self.jobs / self.seconds if self.seconds > 0 else float("inf")

    @property
    def key(self) -> tuple[str, str, str]:
        """The line of the table this measurement belongs to."""
        return (self.backend, self.system, self.operation)


# -- queuekit, generic over a config dict ----------------------------------------------------


async def _dispatch(config: dict[str, Any], n: int, *, batch: bool) -> float:
    async with QueueManager(config) as manager:
        jobs = [Noop() for _ in range(n)]
        started = time.perf_counter()
        if batch:
            for start in range(0, n, BATCH):
                await manager.dispatch_batch(jobs[start : start + BATCH])
        else:
            for job in jobs:
                await manager.dispatch(job)
        return time.perf_counter() - started


async def _purge(config: dict[str, Any]) -> None:
    async with QueueManager(config) as manager:
        await manager.purge("default")
        await manager.forget_failed()


def _drain_in_process(config: dict[str, Any], n: int, concurrency: int) -> float:
    """Run one worker process until it took ``n`` jobs; returns its own timing."""
    out = subprocess.run(
        [
            *_SELF,
            "--worker",
            json.dumps(config),
            "--jobs",
            str(n),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker process failed: {out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["completed"] != n:
        raise RuntimeError(f"worker completed {result['completed']} of {n} jobs: {result}")
    return float(result["seconds"])


async def _worker_main(config: dict[str, Any], n: int, concurrency: int) -> None:
    async with QueueManager(config) as manager:
        started = time.perf_counter()
        summary = await manager.start_worker(max_jobs=n, concurrency=concurrency)
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "completed": summary.completed}))


def queuekit_rows(backend: str, config: dict[str, Any], n: int) -> list[Row]:
    """Dispatch (one by one, batched) and drain (concurrency 1, 10) on ``config``."""
    asyncio.run(_purge(config))
    rows = [
        Row(
            backend,
            "queuekit",
            "dispatch 1 by 1",
            n,
            asyncio.run(_dispatch(config, n, batch=False)),
        )
    ]
    rows.append(Row(backend, "queuekit", "drain c=1", n, _drain_in_process(config, n, 1)))
    rows.append(
        Row(
            backend,
            "queuekit",
            f"dispatch batch {BATCH}",
            n,
            asyncio.run(_dispatch(config, n, batch=True)),
        )
    )
    rows.append(Row(backend, "queuekit", "drain c=10", n, _drain_in_process(config, n, 10)))
    return rows


# -- Huey's SqliteHuey -----------------------------------------------------------------------


def _make_huey(path: str) -> tuple[Any, Any]:
    from huey import SqliteHuey

    huey = SqliteHuey(filename=path)

    @huey.task(name="noop")
    def noop() -> None:
        return None

    return huey, noop


def _huey_worker_main(path: str, n: int, workers: int) -> None:
    from huey.consumer import Consumer
    from huey.signals import SIGNAL_COMPLETE, SIGNAL_EXECUTING

    huey, _ = _make_huey(path)
    state = {"started": 0.0, "done": 0}

    @huey.signal(SIGNAL_EXECUTING)
    def started(signal: str, task: Any) -> None:
        if not state["started"]:
            state["started"] = time.perf_counter()

    @huey.signal(SIGNAL_COMPLETE)
    def completed(signal: str, task: Any) -> None:
        state["done"] += 1
        if state["done"] == n:
            seconds = time.perf_counter() - state["started"]
            print(json.dumps({"seconds": seconds, "completed": n}), flush=True)
            os._exit(0)  # the consumer has no "stop after n tasks"; the result is printed

    Consumer(huey, workers=workers, worker_type="thread", periodic=False).run()


def huey_rows(n: int, folder: str) -> list[Row]:
    """SqliteHuey with its defaults: enqueue N one by one, drain with 1 and 10 threads."""
    path = os.path.join(folder, "huey.db")
    rows = []
    for workers in (1, 10):
        huey, noop = _make_huey(path)
        huey.flush()
        started = time.perf_counter()
        for _ in range(n):
            noop()
        if workers == 1:
            rows.append(Row("sqlite", "huey", "dispatch 1 by 1", n, time.perf_counter() - started))
        out = subprocess.run(
            [*_SELF, "--huey-worker", path, "--jobs", str(n), "--concurrency", str(workers)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if out.returncode != 0 or not out.stdout.strip():
            raise RuntimeError(f"huey consumer failed: {out.stderr[-3000:]}")
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        rows.append(Row("sqlite", "huey", f"drain c={workers}", n, seconds))
    return rows


# -- backends: one function each; add PostgreSQL here ----------------------------------------


def sqlite_backend(n: int) -> list[Row]:
    """queuekit on SQLite (default and synchronous=full) and SqliteHuey, in one folder."""
    folder = tempfile.mkdtemp(prefix="queuekit-bench-")
    try:
        rows = []
        for label, query in (("sqlite", ""), ("sqlite sync=full", "?synchronous=full")):
            url = f"sqlite:///{os.path.join(folder, label.replace(' ', '_'))}.db{query}"
            config = {"queue": {"driver": "database", "database": {"url": url}}}
            rows += queuekit_rows(label, config, n)
        rows += huey_rows(n, folder)
        return rows
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def mariadb_backend(n: int) -> list[Row]:
    """queuekit on MariaDB/MySQL at ``QUEUEKIT_TEST_MYSQL_URL``, in tables of its own."""
    suffix = uuid.uuid4().hex[:8]
    options = {
        "url": MYSQL_URL,
        "table": f"bench_jobs_{suffix}",
        "failed_table": f"bench_failed_{suffix}",
    }
    config = {"queue": {"driver": "database", "database": options}}
    try:
        return queuekit_rows("mariadb", config, n)
    finally:
        from queuekit.drivers.database.mysql import drop_tables

        asyncio.run(drop_tables(options))


#: backend name -> function(n) returning its rows (queuekit and its peers).
BACKENDS: dict[str, Callable[[int], list[Row]]] = {
    "sqlite": sqlite_backend,
    "mariadb": mariadb_backend,
}


def print_table(rows: list[Row]) -> None:
    """Print one line per measurement (the median of repeated runs, with their range).

    SQLite lines also show the multiple of Huey's median rate. Huey has no batch enqueue, so
    batch lines are compared with its one-by-one enqueue.
    """
    runs: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        runs.setdefault(r.key, []).append(r)
    # The lower median of each line: a real run, so its seconds and rate match.
    median = {key: sorted(rs, key=lambda r: r.rate)[(len(rs) - 1) // 2] for key, rs in runs.items()}
    peer = {key[2]: r.rate for key, r in median.items() if key[1] == "huey"}
    repeated = any(len(rs) > 1 for rs in runs.values())
    columns = f"{'backend':<18} {'system':<9} {'operation':<20} {'jobs':>7} {'seconds':>8}"
    header = f"{columns} {'jobs/s':>9}" + (f" {'range':>15}" if repeated else "") + "  vs huey"
    print(header)
    print("-" * len(header))
    for key, r in median.items():
        ratio = ""
        if r.system == "queuekit" and r.backend.startswith("sqlite"):
            base = peer.get("dispatch 1 by 1" if "batch" in r.operation else r.operation)
            ratio = f"{r.rate / base:6.2f}x" if base else ""
        line = f"{r.backend:<18} {r.system:<9} {r.operation:<20} {r.jobs:>7} {r.seconds:>8.3f}"
        spread = ""
        if repeated:
            rates = [x.rate for x in runs[key]]
            spread = f" {f'{min(rates):.0f}-{max(rates):.0f}':>15}"
        print(f"{line} {r.rate:>9.0f}{spread}  {ratio}")
    if peer:
        print(
            "\nHuey runs with its defaults (SQLite synchronous=FULL: an fsync per commit);"
            "\nqueuekit's default is synchronous=NORMAL (survives a process crash, not a power"
            "\ncut); the 'sqlite sync=full' rows compare at Huey's durability."
        )


def main() -> None:
    """Parse arguments and run the chosen backends (or serve as a worker process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 instead of 10,000")
    parser.add_argument("-n", type=int, default=None, help="jobs per measurement")
    parser.add_argument("--only", action="append", choices=sorted(BACKENDS), help="backend(s)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of every backend; prints medians and ranges"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--huey-worker", help=argparse.SUPPRESS)
    parser.add_argument("--jobs", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_worker_main(json.loads(args.worker), args.jobs, args.concurrency))
        return
    if args.huey_worker:
        _huey_worker_main(args.huey_worker, args.jobs, args.concurrency)
        return
    n = args.n or (1_000 if args.quick else 10_000)
    rows: list[Row] = []
    skipped: set[str] = set()
    for _ in range(max(args.repeat, 1)):
        for name in args.only or list(BACKENDS):
            if name in skipped:
                continue
            try:
                rows += BACKENDS[name](n)
            except Exception as e:  # one unreachable server must not hide the other figures
                skipped.add(name)
                print(f"{name}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    print_table(rows)


if __name__ == "__main__":
    main()
