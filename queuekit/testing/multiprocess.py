"""Many worker processes on one store: drain and crash tests for persistent drivers.

``drain_in_processes`` starts worker processes on one config, dispatches ``ProbeJob``s once every
worker runs, waits until every job logged its end, stops the workers and reports what ran where.
``kill_mid_job`` SIGKILLs a worker while it runs a job and checks that another worker runs the
job again once the lease runs out. Both bound every wait and kill every process they start.

Worker processes run ``python -m queuekit.testing.multiprocess CONFIG_JSON --concurrency N``.

Example::

    report = drain_in_processes(config, jobs=3000, processes=3, log_path=tmp_path / "log")
    assert report.missing == [] and report.overlapping == []
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..manager import QueueManager
from .jobs import ProbeJob

__all__ = ["DrainReport", "drain_in_processes", "kill_mid_job", "read_log", "start_worker_process"]


@dataclass
class DrainReport:
    """What the worker processes did, read back from the probe log."""

    dispatched: list[str]
    #: job id -> list of (pid, attempt, start, end); end is None if the run never finished.
    runs: dict[str, list[tuple[int, int, float, float | None]]] = field(default_factory=dict)
    #: Worker pid -> jobs it finished.
    per_process: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def missing(self) -> list[str]:
        """Dispatched jobs that never finished a run."""
        return [
            i for i in self.dispatched if not any(r[3] is not None for r in self.runs.get(i, []))
        ]

    @property
    def repeated(self) -> list[str]:
        """Jobs that started more than once (allowed only after a lost lease)."""
        return [i for i, runs in self.runs.items() if len(runs) > 1]

    @property
    def overlapping(self) -> list[str]:
        """Jobs that ran twice at the same time: must never happen."""
        bad = []
        for job_id, runs in self.runs.items():
            spans = sorted(
                (start, end if end is not None else float("inf")) for _, _, start, end in runs
            )
            if any(nxt[0] < cur[1] for cur, nxt in itertools.pairwise(spans)):
                bad.append(job_id)
        return bad


def read_log(
    path: Path,
) -> tuple[dict[str, list[tuple[int, int, float, float | None]]], dict[int, int]]:
    """Parse a probe log into runs per job and finished jobs per process."""
    runs: dict[str, list[tuple[int, int, float, float | None]]] = defaultdict(list)
    per_process: dict[int, int] = defaultdict(int)
    if not path.exists():
        return {}, {}
    open_runs: dict[tuple[str, int, int], int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 5:
            continue
        kind, job_id, pid_s, attempt_s, t_s = parts
        pid, attempt, t = int(pid_s), int(attempt_s), float(t_s)
        if kind == "start":
            open_runs[(job_id, pid, attempt)] = len(runs[job_id])
            runs[job_id].append((pid, attempt, t, None))
        elif kind == "end":
            index = open_runs.pop((job_id, pid, attempt), None)
            if index is not None:
                p, a, start, _ = runs[job_id][index]
                runs[job_id][index] = (p, a, start, t)
                per_process[pid] += 1
    return dict(runs), dict(per_process)


def _count_ends(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(1 for line in f if line.startswith(b"end "))


def start_worker_process(
    config: dict[str, Any],
    *,
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    ready_path: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a worker process on ``config``; stop it with SIGTERM (graceful) or SIGKILL.

    With ``ready_path`` the process appends a line with its pid there once its worker runs.
    """
    ready = ["--ready", str(ready_path)] if ready_path is not None else []
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "queuekit.testing.multiprocess",
            json.dumps(config),
            "--concurrency",
            str(concurrency),
            *ready,
        ],
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_ready(workers: list[subprocess.Popen[bytes]], ready_path: Path, deadline: float) -> None:
    """Wait until every worker wrote its ready line; raise if one died or time ran out."""
    while True:
        lines = ready_path.read_text().split() if ready_path.exists() else []
        if len(lines) >= len(workers):
            return
        dead = [p for p in workers if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            errors = _stop(workers)
            what = "a worker exited" if dead else f"{len(lines)} of {len(workers)} workers ready"
            raise TimeoutError(
                f"worker processes never all started ({what}): {' | '.join(errors)[-4000:]}"
            )
        time.sleep(0.02)


def _stop(processes: Iterable[subprocess.Popen[bytes]], *, grace: float = 20.0) -> list[str]:
    """SIGTERM every process, SIGKILL those still alive after ``grace``; return their stderr."""
    processes = list(processes)
    for p in processes:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    errors = []
    for p in processes:
        try:
            _, err = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate(timeout=10)
        errors.append(err.decode(errors="replace") if err else "")
    return errors


async def _dispatch_probes(config: dict[str, Any], jobs: list[ProbeJob]) -> list[str]:
    async with QueueManager(config) as manager:
        ids: list[str] = []
        for start in range(0, len(jobs), 500):
            ids += await manager.dispatch_batch(jobs[start : start + 500])
        return ids


def drain_in_processes(
    config: dict[str, Any],
    *,
    jobs: int,
    processes: int,
    log_path: Path,
    concurrency: int = 1,
    timeout: float = 120.0,
) -> DrainReport:
    """Dispatch ``jobs`` probes, drain them with ``processes`` workers, report what ran.

    Raises ``TimeoutError`` (with the workers' stderr) if they do not finish within ``timeout``.
    """
    log_path = Path(log_path)
    ready_path = log_path.with_name(log_path.name + ".ready")
    workers = [
        start_worker_process(config, concurrency=concurrency, ready_path=ready_path)
        for _ in range(processes)
    ]
    errors: list[str] = []
    try:
        # Every worker is waiting before the first job exists, so how the jobs spread does not
        # depend on how long each process took to start.
        _wait_ready(workers, ready_path, time.monotonic() + timeout)
        ids = asyncio.run(
            _dispatch_probes(config, [ProbeJob(log_path=str(log_path)) for _ in range(jobs)])
        )
        started = time.monotonic()
        deadline = started + timeout
        while _count_ends(log_path) < jobs and time.monotonic() < deadline:
            if all(p.poll() is not None for p in workers):
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        errors = _stop(workers)
    runs, per_process = read_log(log_path)
    report = DrainReport(dispatched=ids, runs=runs, per_process=per_process, elapsed=elapsed)
    if report.missing:
        raise TimeoutError(
            f"{len(report.missing)} of {jobs} jobs never finished within {timeout:g}s; "
            f"worker stderr: {' | '.join(e[-2000:] for e in errors)}"
        )
    return report


def kill_mid_job(
    config: dict[str, Any], *, log_path: Path, lease: float, timeout: float = 60.0
) -> DrainReport:
    """SIGKILL a worker mid-job; a second worker must run the job again after ``lease``.

    ``config`` must set the driver's ``retry_after`` to ``lease``. Returns the report; the job's
    runs show the killed attempt (no end) and the finished re-run.
    """
    log_path = Path(log_path)
    probe = ProbeJob(log_path=str(log_path), sleep=max(lease * 20, 30.0), slow_attempts=1)
    (job_id,) = asyncio.run(_dispatch_probes(config, [probe]))
    first = start_worker_process(config)
    second: subprocess.Popen[bytes] | None = None
    started = time.monotonic()
    try:
        deadline = started + timeout
        while not log_path.exists() or "start" not in log_path.read_text():
            if time.monotonic() > deadline or first.poll() is not None:
                raise TimeoutError(
                    f"first worker never started the job: {_stop([first])[0][-2000:]}"
                )
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        second = start_worker_process(config)
        while _count_ends(log_path) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        elapsed = time.monotonic() - started
    finally:
        errors = _stop([p for p in (first, second) if p is not None])
    runs, per_process = read_log(log_path)
    report = DrainReport(dispatched=[job_id], runs=runs, per_process=per_process, elapsed=elapsed)
    if report.missing:
        raise TimeoutError(f"the killed job never ran again within {timeout:g}s: {errors}")
    return report


async def _serve(config: dict[str, Any], concurrency: int, ready_path: str | None) -> None:
    async with QueueManager(config) as manager:
        worker = await manager.start_worker(concurrency=concurrency, run_in_background=True)
        if ready_path is not None:
            await asyncio.to_thread(_append_line, Path(ready_path), str(os.getpid()))
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        waiter = asyncio.ensure_future(worker.wait())
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        await worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await waiter


def _append_line(path: Path, line: str) -> None:
    with path.open("a") as f:
        f.write(line + "\n")


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process started by ``start_worker_process``."""
    parser = argparse.ArgumentParser(prog="python -m queuekit.testing.multiprocess")
    parser.add_argument("config")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--ready", default=None, help="file to append this pid to once running")
    args = parser.parse_args(argv)
    asyncio.run(_serve(json.loads(args.config), args.concurrency, args.ready))


if __name__ == "__main__":
    main()
