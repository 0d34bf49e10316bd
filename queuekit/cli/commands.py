"""The ``queuekit`` subcommands: worker, stats, failed, purge, demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any, TextIO

from ..manager import QueueManager
from ..worker import Worker, WorkerSummary
from .loader import CliError, load_manager
from .output import FAILED_HEADERS, describe_summary, failed_rows, render_table

log = logging.getLogger("queuekit.cli")


def _manager(args: argparse.Namespace) -> QueueManager:
    return load_manager(args.app, args.config, args.imports)


async def cmd_worker(args: argparse.Namespace, out: TextIO) -> int:
    """Run a worker until --max-jobs, --timeout, SIGINT or SIGTERM; print its summary."""
    manager = _manager(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    async with manager:
        worker = await manager.start_worker(
            queues=queues,
            concurrency=args.concurrency,
            max_jobs=args.max_jobs,
            delay=args.delay,
            timeout=args.timeout,
            run_in_background=True,
        )
        assert isinstance(worker, Worker)
        log.info(
            "worker started: driver %s, queues %s, concurrency %d (Ctrl-C or SIGTERM stops it)",
            manager.default_driver_name,
            ",".join(queues) if queues else "all",
            worker.options.concurrency,
        )
        with _GracefulStop(worker):
            summary = await worker.wait()
    print(describe_summary(summary), file=out)
    return 0


class _GracefulStop:
    """Turns SIGINT/SIGTERM into ``worker.stop()``: the first signal lets running jobs finish
    within the grace period; a second one stops at once and hands running jobs back."""

    _SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.loop = asyncio.get_running_loop()
        self.received = 0
        self.tasks: set[asyncio.Task[WorkerSummary]] = set()
        self._installed: list[signal.Signals] = []
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _GracefulStop:
        for sig in self._SIGNALS:
            try:
                self.loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError):
                # No loop signal handlers (Windows): route the plain handler into the loop.
                self._previous[sig] = signal.signal(
                    sig, lambda s, _f: self.loop.call_soon_threadsafe(self._on_signal, s)
                )
            else:
                self._installed.append(sig)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig in self._installed:
            self.loop.remove_signal_handler(sig)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, sig: int) -> None:
        self.received += 1
        name = signal.Signals(sig).name
        graceful = self.received == 1
        if graceful:
            log.warning(
                "%s: stopping; running jobs may finish within %gs (send it again to stop now)",
                name,
                self.worker.options.grace,
            )
        else:
            log.warning("%s again: stopping now; running jobs go back to the queue", name)
        task = self.loop.create_task(self.worker.stop(graceful=graceful))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    """Print the driver's counts per queue."""
    async with _manager(args) as manager:
        stats = await manager.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True), file=out)
        return 0
    columns = ("pending", "delayed", "reserved", "failed")
    rows: list[list[Any]] = [
        [queue, *(counts.get(c, 0) for c in columns)] for queue, counts in sorted(stats.items())
    ]
    if not rows:
        print("no jobs in any queue", file=out)
        return 0
    rows.append(["total", *(sum(row[i + 1] for row in rows) for i in range(len(columns)))])
    print(render_table(("queue", *columns), rows), file=out)
    return 0


async def cmd_failed(args: argparse.Namespace, out: TextIO) -> int:
    """List, retry or forget jobs in the failed store."""
    ids: list[str] = list(args.ids)
    async with _manager(args) as manager:
        if args.action == "list":
            records = await manager.failed_jobs(queue=args.queue, limit=args.limit)
            if args.json:
                print(json.dumps([r.to_json() for r in records], indent=2), file=out)
            elif records:
                print(render_table(FAILED_HEADERS, failed_rows(records)), file=out)
            else:
                print("no failed jobs", file=out)
            return 0
        if not ids and not args.all:
            raise CliError(f"failed {args.action}: give the job IDS, or --all for every failed job")
        if ids and args.all:
            raise CliError(f"failed {args.action}: give IDS or --all, not both")
        if args.action == "retry":
            count, verb = await manager.retry_failed(ids or None), "queued again"
        else:
            count, verb = await manager.forget_failed(ids or None), "deleted"
    print(f"{count} failed job(s) {verb}", file=out)
    if ids and count < len(ids):
        print(
            f"queuekit: {len(ids) - count} of the ids given are not in the failed store",
            file=sys.stderr,
        )
        return 1
    return 0


async def cmd_purge(args: argparse.Namespace, out: TextIO) -> int:
    """Delete every pending and delayed job of one queue."""
    async with _manager(args) as manager:
        count = await manager.purge(args.queue)
    print(f"{count} job(s) deleted from queue {args.queue!r}", file=out)
    return 0


async def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo (``queuekit.demo.run_demo``)."""
    from ..demo import run_demo  # the demo's job classes register only when the demo runs

    report = await run_demo(jobs=args.jobs, driver=args.driver, path=args.path, out=out)
    return 0 if report.finished else 1
