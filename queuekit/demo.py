"""``queuekit demo``: thousands of sample jobs through a real worker, for a first look.

The demo dispatches a mix of jobs to a persistent queue in a temporary folder (the SQLite database
driver when it is available), runs a worker with a progress bar and prints the metrics and the
failed jobs. The mix shows every path a job can take:

- most jobs succeed (``demo.resize_image`` is ``async``, ``demo.send_receipt`` a plain ``def``
  that runs in a thread);
- ``demo.charge_card`` fails once or twice, then succeeds on a retry;
- ``demo.import_rows`` fails on every attempt and lands in the failed store after its retries;
- ``demo.refund`` raises ``PermanentError`` and fails at once, without a retry;
- ``demo.daily_report`` is dispatched with a delay of one to two seconds.

The job classes keep fixed ``job_name``s, so a kept store (``--path``) can be inspected and run
again later with ``queuekit worker --config DIR/queuekit.json --import queuekit.demo``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .cli import CliError, error_headline, render_table
from .demo_jobs import (
    ChargeCardJob,
    DailyReportJob,
    DemoPlan,
    ImportRowsJob,
    RefundJob,
    ResizeImageJob,
    SendReceiptJob,
    plan_jobs,
)
from .manager import QueueManager
from .record import JobRecord
from .worker import Worker

__all__ = [
    "ChargeCardJob",
    "DailyReportJob",
    "DemoPlan",
    "DemoReport",
    "ImportRowsJob",
    "RefundJob",
    "ResizeImageJob",
    "SendReceiptJob",
    "demo_config",
    "plan_jobs",
    "run_demo",
]


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


def demo_config(driver: str, folder: Path) -> tuple[dict[str, Any], str]:
    """The config dict for ``driver`` with its store in ``folder``, and a line describing it.

    Falls back to the memory driver (and says so) when the module of the asked-for driver is not
    part of this installation.
    """
    # Short idle waits: a polling driver then picks up delayed jobs and retries promptly.
    worker = {"idle_wait": 0.1, "grace": 5}
    if driver == "sqlite" and _importable("queuekit.drivers.database.sqlite"):
        path = folder / "jobs.db"
        return (
            {
                "queue": {
                    "driver": "database",
                    "database": {"url": f"sqlite:///{path}"},
                    "worker": worker,
                }
            },
            f"database driver, SQLite at {path}",
        )
    if driver == "file" and _importable("queuekit.drivers.file"):
        path = folder / "jobs.json"
        return (
            {"queue": {"driver": "file", "file": {"path": str(path)}, "worker": worker}},
            f"file driver at {path}",
        )
    if driver != "memory":
        note = f"the {driver} driver is not available in this installation; "
    else:
        note = ""
    return (
        {"queue": {"driver": "memory", "worker": worker}},
        f"memory driver ({note}jobs live in this process only)",
    )


@dataclass(slots=True)
class DemoReport:
    """What a demo run did, for callers and tests."""

    driver: str
    dispatched: int
    metrics: dict[str, Any]
    failed: list[JobRecord]
    expected_failures: int
    elapsed: float
    finished: bool


class _Progress:
    """A one-line progress bar drawn with ``\\r`` on a terminal, plain lines elsewhere."""

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.tty = stream.isatty()
        self.started = time.perf_counter()
        self._last_line = 0.0

    def draw(self, metrics: dict[str, Any], *, final: bool = False) -> None:
        done = metrics["total_completed"] + metrics["total_failed"]
        elapsed = time.perf_counter() - self.started
        if not (self.tty or final or elapsed - self._last_line >= 1.0):
            return
        self._last_line = elapsed
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        rate = done / elapsed if elapsed > 0 else 0.0
        line = (
            f"[{bar:<30}] {done:>{len(str(self.total))}}/{self.total} {share:6.1%}  "
            f"ok {metrics['total_completed']}  failed {metrics['total_failed']}  "
            f"retries {metrics['total_retried']}  {rate:,.0f} jobs/s"
        )
        end = "\n" if final or not self.tty else ""
        self.stream.write(("\r" + line if self.tty else line) + end)
        self.stream.flush()


async def run_demo(
    *,
    jobs: int = 2000,
    driver: str = "sqlite",
    path: str | Path | None = None,
    concurrency: int = 8,
    deadline: float = 120.0,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> DemoReport:
    """Dispatch ``jobs`` sample jobs, drain them with a worker, print what happened.

    ``driver`` is ``sqlite``, ``file`` or ``memory``; the store goes to ``path`` (kept, with a
    ``queuekit.json`` config beside it) or to a temporary folder (deleted). Progress goes to
    ``err``, results to ``out``. The worker stops when every job has completed or failed for
    good, or after ``deadline`` seconds (then ``finished`` is False).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    with ExitStack() as stack:
        if path is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="queuekit-demo-")))
        else:
            folder = _prepare_folder(Path(path))
        config, described = demo_config(driver, folder)
        if path is not None:
            (folder / "queuekit.json").write_text(json.dumps(config, indent=2) + "\n")
        plan = plan_jobs(jobs)
        print(
            f"queuekit demo: {plan.total:,} jobs, {described}, concurrency {concurrency}", file=out
        )
        async with QueueManager(config) as manager:
            dispatch_seconds = await _dispatch(manager, plan)
            print(
                f"dispatched {plan.total:,} jobs in {dispatch_seconds:.2f} s "
                f"({plan.total / max(dispatch_seconds, 1e-9):,.0f} jobs/s); "
                f"{len(plan.delayed)} of them delayed 1-2 s",
                file=out,
            )
            out.flush()
            elapsed, finished = await _drain(manager, plan.total, concurrency, deadline, err)
            report = DemoReport(
                driver=manager.default_driver_name,
                dispatched=plan.total,
                metrics=manager.get_metrics(),
                failed=await manager.failed_jobs(limit=plan.total),
                expected_failures=plan.doomed,
                elapsed=elapsed,
                finished=finished,
            )
            stats = await manager.stats()
        _print_report(report, stats, out)
        if path is not None:
            cfg = folder / "queuekit.json"
            print(
                f"\nThe store is kept in {folder}. Look at it with:\n"
                f"  queuekit stats --config {cfg}\n"
                f"  queuekit failed list --config {cfg}",
                file=out,
            )
    return report


def _prepare_folder(folder: Path) -> Path:
    # Absolute, so the kept queuekit.json works from any working directory.
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("jobs.db", "jobs.json"):
        if (folder / name).exists():
            # A store left by an earlier run would mix its jobs into this run's figures.
            raise CliError(
                f"--path {folder}: {name} already exists; delete it or pick another folder"
            )
    return folder


async def _dispatch(manager: QueueManager, plan: DemoPlan, chunk: int = 500) -> float:
    started = time.perf_counter()
    for i in range(0, len(plan.now), chunk):
        await manager.dispatch_batch(plan.now[i : i + chunk])
    for job, delay in plan.delayed:
        await manager.dispatch(job, delay=delay)
    return time.perf_counter() - started


async def _drain(
    manager: QueueManager, total: int, concurrency: int, deadline: float, err: TextIO
) -> tuple[float, bool]:
    """Run a background worker until every job has settled; returns (seconds, finished).

    Ctrl-C stops the worker gracefully, and the report still shows what was done.
    """
    progress = _Progress(total, err)
    worker = await manager.start_worker(concurrency=concurrency, run_in_background=True)
    assert isinstance(worker, Worker)
    interrupted = asyncio.Event()
    with _on_sigint(interrupted.set):
        try:
            while progress.started + deadline > time.perf_counter() and not interrupted.is_set():
                metrics = manager.get_metrics()
                if metrics["total_completed"] + metrics["total_failed"] >= total:
                    break
                progress.draw(metrics)
                if not worker.running and worker.summary.stop_reason is not None:
                    break
                await asyncio.sleep(0.1)
        finally:
            await worker.stop()
    metrics = manager.get_metrics()
    progress.draw(metrics, final=True)
    settled = metrics["total_completed"] + metrics["total_failed"]
    if settled < total:
        why = "interrupted" if interrupted.is_set() else f"stopped after {deadline:g} s"
        print(f"queuekit demo: {why} with {total - settled} jobs unfinished", file=err)
    return time.perf_counter() - progress.started, settled >= total


@contextmanager
def _on_sigint(callback: Callable[[], None]) -> Iterator[None]:
    """Route SIGINT to ``callback`` while inside, where the loop can take signals."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        # Not the main thread, or no loop signal handlers (Windows): Ctrl-C interrupts as usual.
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _print_report(report: DemoReport, stats: dict[str, dict[str, int]], out: TextIO) -> None:
    m = report.metrics
    print(f"\nprocessed in {report.elapsed:.2f} s\n\nMetrics (manager.get_metrics())", file=out)
    rows: list[Sequence[Any]] = [
        ("total_queued", m["total_queued"]),
        ("total_completed", m["total_completed"]),
        ("total_failed", m["total_failed"]),
        ("total_retried", m["total_retried"]),
        ("currently_processing", m["currently_processing"]),
        ("success_rate", f"{m['success_rate']:.1%}"),
        ("failure_rate", f"{m['failure_rate']:.1%}"),
        ("average_processing_time_ms", round(m["average_processing_time_ms"], 2)),
    ]
    print(render_table(("metric", "value"), rows, indent="  "), file=out)

    names = sorted(m["queued_by_type"])
    by_type = [
        (
            name,
            m["queued_by_type"].get(name, 0),
            m["completed_by_type"].get(name, 0),
            m["retried_by_type"].get(name, 0),
            m["failed_by_type"].get(name, 0),
        )
        for name in names
    ]
    print("\nBy job type", file=out)
    print(
        render_table(("type", "queued", "completed", "retried", "failed"), by_type, "  "), file=out
    )

    queues = [
        (q, c["pending"], c["delayed"], c["reserved"], c["failed"])
        for q, c in sorted(stats.items())
    ]
    print("\nQueues (manager.stats())", file=out)
    print(
        render_table(("queue", "pending", "delayed", "reserved", "failed"), queues, "  "), file=out
    )

    # A few of each type, so every way of failing shows up however many there are.
    shown: list[JobRecord] = []
    seen: dict[str, int] = {}
    for record in report.failed:
        seen[record.job_name] = seen.get(record.job_name, 0) + 1
        if seen[record.job_name] <= 4:
            shown.append(record)
    print(f"\nFailed jobs (manager.failed_jobs()): {len(report.failed)}", file=out)
    if shown:
        rows = [(r.id, r.job_name, r.attempts, error_headline(r.last_error, 72)) for r in shown]
        print(render_table(("id", "type", "attempts", "last error"), rows, "  "), file=out)
    if len(report.failed) > len(shown):
        print(f"  ... and {len(report.failed) - len(shown)} more like these", file=out)
