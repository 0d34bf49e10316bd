"""The ``queuekit`` command line, run as ``python -m queuekit`` in subprocesses.

Jobs are dispatched from this process into an SQLite store in ``tmp_path``; the CLI processes see
the same store through an app module (``cli_app:manager``) or a config file, as a user's would.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import types
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from queuekit import QueueManager
from queuekit.cli import CliError, error_headline, render_table
from queuekit.demo import ChargeCardJob, plan_jobs, run_demo

HAS_SQLITE = importlib.util.find_spec("queuekit.drivers.database.sqlite") is not None
needs_sqlite = pytest.mark.skipif(not HAS_SQLITE, reason="the SQLite database driver is missing")

# The job classes, written to tmp_path for the CLI processes and loaded here under another module
# name for dispatching; records name jobs by job_name only, so both sides agree.
JOBS_SOURCE = '''
import asyncio
import pathlib
import time
from typing import ClassVar

from queuekit import QueueJob


class Add(QueueJob):
    job_name: ClassVar[str] = "cli.add"
    a: int

    async def handle(self) -> int:
        return self.a + 1


class Boom(QueueJob):
    job_name: ClassVar[str] = "cli.boom"
    max_retries: ClassVar[int] = 0

    async def handle(self) -> None:
        raise RuntimeError("kaboom")


class Gate(QueueJob):
    """Marks its start, then waits (bounded) until the test creates the ``go`` file."""

    job_name: ClassVar[str] = "cli.gate"
    folder: str

    async def handle(self) -> None:
        folder = pathlib.Path(self.folder)
        (folder / f"started-{self.context.job_id}").touch()
        deadline = time.monotonic() + 60
        while not (folder / "go").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (folder / f"done-{self.context.job_id}").touch()
'''

APP_SOURCE = """
import json
import pathlib

import cli_jobs  # noqa: F401 - registers the job classes
from queuekit import QueueManager

CONFIG = json.loads((pathlib.Path(__file__).parent / "queue.json").read_text())
manager = QueueManager(CONFIG)


def make_manager():
    return QueueManager(CONFIG)


not_a_manager = 42
"""

jobs = types.ModuleType("cli_test_jobs")
sys.modules[jobs.__name__] = jobs
exec(compile(JOBS_SOURCE, "cli_test_jobs", "exec"), jobs.__dict__)


class Project:
    """A tmp folder holding an app module, its job module, config files and an SQLite store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config: dict[str, Any] = {
            "queue": {
                "driver": "database",
                "database": {"url": f"sqlite:///{root / 'jobs.db'}"},
                "worker": {"idle_wait": 0.1, "grace": 30},
            }
        }
        (root / "cli_jobs.py").write_text(JOBS_SOURCE)
        (root / "cli_app.py").write_text(APP_SOURCE)
        (root / "queue.json").write_text(json.dumps(self.config))
        url = self.config["queue"]["database"]["url"]
        (root / "queue.toml").write_text(
            f'[queue]\ndriver = "database"\n\n[queue.database]\nurl = "{url}"\n'
        )

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``python -m queuekit ARGS`` in the project folder."""
        return subprocess.run(
            [sys.executable, "-m", "queuekit", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(),
        )

    def use(self, action: Callable[[QueueManager], Coroutine[Any, Any, Any]]) -> Any:
        """Run ``action(manager)`` on this project's store from the test process."""

        async def run() -> Any:
            async with QueueManager(self.config) as manager:
                return await action(manager)

        return asyncio.run(run())

    def stats(self) -> dict[str, dict[str, int]]:
        """The store's counts per queue."""
        return self.use(lambda m: m.stats())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def project(tmp_path: Path) -> Project:
    if not HAS_SQLITE:
        pytest.skip("the SQLite database driver is missing")
    return Project(tmp_path)


def _total(stats: dict[str, dict[str, int]], column: str) -> int:
    return sum(counts[column] for counts in stats.values())


# -- worker ------------------------------------------------------------------------------


def test_worker_stops_after_max_jobs(project: Project) -> None:
    project.use(lambda m: m.dispatch_batch([jobs.Add(a=i) for i in range(5)]))

    result = project.cli("worker", "cli_app:manager", "--max-jobs", "3", "--concurrency", "2")

    assert result.returncode == 0, result.stderr
    assert "worker stopped (max_jobs): processed 3 (completed 3" in result.stdout
    assert result.stderr.count("done cli.add") == 3
    assert _total(project.stats(), "pending") == 2


def test_worker_queues_option_restricts_the_queues(project: Project) -> None:
    async def fill(m: QueueManager) -> None:
        await m.dispatch(jobs.Add(a=1), queue="low")
        await m.dispatch(jobs.Add(a=2), queue="high")

    project.use(fill)
    result = project.cli("worker", "cli_app:make_manager", "--queues", "high", "--timeout", "1")

    assert result.returncode == 0, result.stderr
    assert "worker stopped (timeout): processed 1" in result.stdout
    stats = project.stats()
    assert stats["low"]["pending"] == 1
    assert stats.get("high", {}).get("pending", 0) == 0


@pytest.mark.parametrize("config", ["queue.json", "queue.toml"])
def test_worker_from_config_file_and_import(project: Project, config: str) -> None:
    project.use(lambda m: m.dispatch_batch([jobs.Add(a=i) for i in range(4)]))

    result = project.cli("worker", "--config", config, "--import", "cli_jobs", "--max-jobs", "4")

    assert result.returncode == 0, result.stderr
    assert "processed 4 (completed 4" in result.stdout
    assert _total(project.stats(), "pending") == 0


def test_worker_without_import_fails_unknown_jobs_and_keeps_them(project: Project) -> None:
    project.use(lambda m: m.dispatch(jobs.Add(a=1)))

    result = project.cli("worker", "--config", "queue.json", "--max-jobs", "1")

    assert result.returncode == 0, result.stderr
    assert "failed 1" in result.stdout
    failed = json.loads(project.cli("failed", "list", "--config", "queue.json", "--json").stdout)
    assert [r["job_name"] for r in failed] == ["cli.add"]
    assert "unknown job type 'cli.add'" in failed[0]["last_error"]


def _reader(stream: Any) -> tuple[queue.Queue[str], list[str]]:
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def pump() -> None:
        for line in stream:
            seen.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines, seen


def _wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _wait_for_line(lines: queue.Queue[str], text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"timed out waiting for a line with {text!r}") from None
        if text in line:
            return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_gracefully_and_lets_the_running_job_finish(
    project: Project, sig: signal.Signals
) -> None:
    folder = str(project.root)
    ids = project.use(lambda m: m.dispatch_batch([jobs.Gate(folder=folder) for _ in range(2)]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuekit", "worker", "cli_app:manager"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        errors, seen = _reader(proc.stderr)
        _wait_for(lambda: (project.root / f"started-{ids[0]}").exists(), "the first job to start")
        proc.send_signal(sig)
        # The worker has taken the signal while the job still waits for ``go``: it is in flight.
        _wait_for_line(errors, f"{sig.name}: stopping")
        (project.root / "go").touch()
        assert proc.wait(timeout=60) == 0, "".join(seen)
        stdout = proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)

    assert (project.root / f"done-{ids[0]}").exists()
    assert "worker stopped (stopped): processed 1 (completed 1" in stdout
    # The second job was never taken: no new job starts once a stop is asked for.
    assert not (project.root / f"started-{ids[1]}").exists()
    stats = project.stats()
    assert _total(stats, "pending") == 1
    assert _total(stats, "reserved") == 0


# -- stats, failed, purge ------------------------------------------------------------------


def test_stats_prints_a_table_and_json(project: Project) -> None:
    async def fill(m: QueueManager) -> None:
        await m.dispatch_batch([jobs.Add(a=i) for i in range(3)], queue="emails")
        await m.dispatch(jobs.Add(a=9), delay=3600)

    project.use(fill)
    table = project.cli("stats", "cli_app:manager")
    as_json = project.cli("stats", "--config", "queue.toml", "--json")

    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines()}
    assert rows["queue"] == ["pending", "delayed", "reserved", "failed"]
    assert rows["emails"] == ["3", "0", "0", "0"]
    assert rows["default"] == ["0", "1", "0", "0"]
    assert rows["total"] == ["3", "1", "0", "0"]
    assert json.loads(as_json.stdout) == project.stats()


def test_stats_of_an_empty_store(project: Project) -> None:
    result = project.cli("stats", "cli_app:manager")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no jobs in any queue"


def test_failed_list_retry_forget(project: Project) -> None:
    async def fail_two(m: QueueManager) -> list[str]:
        ids = await m.dispatch_batch([jobs.Boom(), jobs.Boom()])
        await m.start_worker(max_jobs=2)
        return ids

    first, second = project.use(fail_two)

    listed = project.cli("failed", "list", "cli_app:manager")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == [
        "id", "type", "queue", "attempts", "failed", "at", "error"
    ]  # fmt: skip
    assert listed.stdout.count("RuntimeError: kaboom") == 2
    records = json.loads(project.cli("failed", "list", "cli_app:manager", "--json").stdout)
    assert sorted(r["id"] for r in records) == sorted([first, second])

    retried = project.cli("failed", "retry", "--config", "queue.json", first)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == "1 failed job(s) queued again"
    stats = project.stats()
    assert (_total(stats, "pending"), _total(stats, "failed")) == (1, 1)

    forgot = project.cli("failed", "forget", "cli_app:manager", "--all")
    assert forgot.stdout.strip() == "1 failed job(s) deleted"
    assert _total(project.stats(), "failed") == 0
    assert project.cli("failed", "list", "cli_app:manager").stdout.strip() == "no failed jobs"


def test_failed_retry_needs_ids_or_all_and_reports_unknown_ids(project: Project) -> None:
    bare = project.cli("failed", "retry", "cli_app:manager")
    assert bare.returncode == 2
    assert "give the job IDS, or --all" in bare.stderr

    unknown = project.cli("failed", "forget", "cli_app:manager", "no-such-id")
    assert unknown.returncode == 1
    assert "0 failed job(s) deleted" in unknown.stdout
    assert "1 of the ids given are not in the failed store" in unknown.stderr


def test_purge_deletes_one_queue(project: Project) -> None:
    async def fill(m: QueueManager) -> None:
        await m.dispatch_batch([jobs.Add(a=i) for i in range(3)], queue="emails")
        await m.dispatch(jobs.Add(a=1), queue="emails", delay=3600)
        await m.dispatch(jobs.Add(a=2))

    project.use(fill)
    result = project.cli("purge", "cli_app:manager", "emails")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "4 job(s) deleted from queue 'emails'"
    stats = project.stats()
    assert stats["default"]["pending"] == 1
    assert stats.get("emails", {}).get("pending", 0) == 0
    assert stats.get("emails", {}).get("delayed", 0) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["stats", "cli_app"], "APP must look like 'module:attribute'"),
        (["stats", "no_such_module:manager"], "cannot import module 'no_such_module'"),
        (["stats", "cli_app:missing"], "'cli_app' has no attribute 'missing'"),
        (["stats", "cli_app:not_a_manager"], "is a int, not a QueueManager"),
        (["stats"], "give APP as module:attribute, or --config FILE"),
        (["stats", "cli_app:manager", "--config", "queue.json"], "give APP or --config, not both"),
        (["stats", "--config", "missing.json"], "--config missing.json: cannot read it"),
        (["stats", "--config", "cli_app.py"], "--config cli_app.py: not valid JSON"),
        (["stats", "--config", "bad.json"], "queue.driver: unknown driver 'mem'"),
        (["worker", "--config", "queue.json", "--import", "nope_jobs"], "--import nope_jobs"),
        (["worker", "cli_app:manager", "--timeout", "0"], "--timeout: must be more than 0"),
        (["worker", "cli_app:manager", "--concurrency", "two"], "expected a whole number"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(
    project: Project, args: list[str], message: str
) -> None:
    (project.root / "bad.json").write_text('{"queue": {"driver": "mem"}}')
    result = project.cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


# -- demo --------------------------------------------------------------------------------


def test_demo_command_prints_metrics_and_failed_jobs(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "queuekit", "demo", "--jobs", "200", "--driver", "memory"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    doomed = plan_jobs(200).doomed
    assert "Metrics (manager.get_metrics())" in result.stdout
    metrics = dict(
        line.split(None, 1) for line in result.stdout.splitlines() if line.startswith("  total_")
    )
    assert metrics["total_queued"].strip() == "200"
    assert int(metrics["total_failed"]) == doomed
    assert int(metrics["total_completed"]) == 200 - doomed
    assert f"Failed jobs (manager.failed_jobs()): {doomed}" in result.stdout
    assert "ValueError: batch" in result.stdout
    assert "PermanentError: order" in result.stdout
    assert "200/200" in result.stderr


def test_demo_ctrl_c_stops_the_worker_and_still_reports(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuekit", "demo", "--jobs", "20000", "--driver", "memory"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        errors, seen = _reader(proc.stderr)
        _wait_for_line(errors, "/20000")  # the progress bar: the worker is draining
        proc.send_signal(signal.SIGINT)
        stdout = proc.stdout.read() if proc.stdout else ""
        assert proc.wait(timeout=60) == 1, "".join(seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    _wait_for(lambda: any("interrupted with" in line for line in seen), "the interrupt message")
    assert "Metrics (manager.get_metrics())" in stdout
    assert "Failed jobs (manager.failed_jobs())" in stdout


DRIVERS = ["memory", pytest.param("sqlite", marks=needs_sqlite)]


@pytest.mark.parametrize("driver", DRIVERS)
async def test_run_demo_settles_every_job(driver: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    plan = plan_jobs(300)

    report = await run_demo(jobs=300, driver=driver, out=out, err=err)

    assert report.finished
    assert report.driver == ("database" if driver == "sqlite" else "memory")
    m = report.metrics
    assert m["total_queued"] == 300
    assert m["total_completed"] + m["total_failed"] == 300
    assert len(report.failed) == m["total_failed"] == report.expected_failures == plan.doomed
    assert {r.job_name for r in report.failed} == {"demo.import_rows", "demo.refund"}
    # import_rows uses all 3 attempts; refund raises PermanentError and stops after 1.
    assert {(r.job_name, r.attempts) for r in report.failed} == {
        ("demo.import_rows", 3),
        ("demo.refund", 1),
    }
    flaky = [j for j in plan.now if isinstance(j, ChargeCardJob)]
    assert m["completed_by_type"]["demo.charge_card"] == len(flaky)
    assert m["retried_by_type"]["demo.charge_card"] == sum(j.failures for j in flaky)
    assert m["completed_by_type"]["demo.daily_report"] == len(plan.delayed)


@needs_sqlite
async def test_run_demo_keeps_a_store_given_a_path(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    report = await run_demo(jobs=100, driver="sqlite", path=folder, out=io.StringIO())
    config = json.loads((folder / "queuekit.json").read_text())

    async with QueueManager(config) as manager:
        assert len(await manager.failed_jobs()) == len(report.failed) > 0

    with pytest.raises(CliError, match="already exists"):
        await run_demo(jobs=10, driver="sqlite", path=folder, out=io.StringIO())


async def test_run_demo_falls_back_to_memory_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import queuekit.demo as demo

    monkeypatch.setattr(demo, "_importable", lambda module: False)
    out = io.StringIO()
    report = await run_demo(jobs=20, driver="sqlite", out=out, err=io.StringIO())
    assert report.driver == "memory"
    assert "the sqlite driver is not available in this installation" in out.getvalue()


# -- output helpers --------------------------------------------------------------------------


def test_error_headline_finds_the_exception_line() -> None:
    def raise_chained() -> None:
        try:
            raise KeyError("inner")
        except KeyError as e:
            raise ValueError("outer\nsecond line") from e

    try:
        raise_chained()
    except ValueError as e:
        text = "".join(traceback.format_exception(e))
    assert error_headline(text) == "ValueError: outer"
    assert error_headline("PermanentError: gone") == "PermanentError: gone"
    assert error_headline(None) == ""
    assert error_headline("x" * 200, width=20) == "x" * 17 + "..."


def test_render_table_aligns_numbers_right() -> None:
    table = render_table(("name", "count"), [("a", 5), ("bbb", 1234)])
    assert table.splitlines() == ["name  count", "a         5", "bbb   1,234"]
