"""The ``queuekit`` command line (also ``python -m queuekit``).

Every command but ``demo`` works on one application's queue, named in one of two ways:

- ``APP`` as ``module:attribute``, naming a ``QueueManager`` or a zero-argument callable that
  returns one (``queuekit worker myapp.queue:manager``);
- ``--config FILE`` (JSON, or TOML when the name ends in ``.toml``) holding the config dict, plus
  ``--import MODULE`` (repeatable) for the modules that define the job classes.

Exit codes: 0 success, 1 a queue operation failed, 2 bad usage or configuration, 130 interrupted.
See ``docs/cli.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import tomllib
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from . import __version__
from .errors import ConfigError, QueueError
from .manager import QueueManager
from .record import JobRecord
from .worker import Worker, WorkerSummary

__all__ = ["CliError", "error_headline", "load_manager", "main", "render_table"]

log = logging.getLogger("queuekit.cli")


class CliError(Exception):
    """A command cannot run as asked (bad APP, unreadable config); exit code 2."""


# -- finding the application's QueueManager ----------------------------------------------


def load_manager(
    app: str | None, config: str | None = None, imports: Sequence[str] = ()
) -> QueueManager:
    """The ``QueueManager`` a command works on: from ``APP`` or from ``--config`` + ``--import``.

    ``imports`` are imported first, so the job classes they define are registered before a
    worker meets their records. Raises ``CliError`` saying what was expected and what was found.
    """
    # A console script does not put the working directory on sys.path the way ``python -m``
    # does; without it ``queuekit worker app:manager`` could not find ./app.py.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for module in imports:
        _import(module, what=f"--import {module}")
    if app is not None and config is not None:
        raise CliError(f"give APP or --config, not both (got APP {app!r} and --config {config!r})")
    if config is not None:
        return QueueManager(read_config(config))
    if app is None:
        raise CliError("no queue named: give APP as module:attribute, or --config FILE")
    return _manager_from_app(app)


def _import(module: str, *, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CliError(f"{what}: cannot import module {module!r}: {e}") from e


def _manager_from_app(app: str) -> QueueManager:
    module_name, sep, attribute = app.partition(":")
    if not sep or not module_name or not attribute:
        raise CliError(
            f"APP must look like 'module:attribute' (e.g. myapp.queue:manager), got {app!r}"
        )
    target: Any = _import(module_name, what=f"APP {app!r}")
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CliError(f"APP {app!r}: {module_name!r} has no attribute {attribute!r}") from None
    if isinstance(target, QueueManager):
        return target
    if callable(target):
        made = target()
        if isinstance(made, QueueManager):
            return made
        raise CliError(
            f"APP {app!r}: calling it returned {type(made).__name__}, not a QueueManager"
        )
    raise CliError(
        f"APP {app!r} is a {type(target).__name__}, not a QueueManager "
        "(or a zero-argument callable returning one)"
    )


def read_config(path: str) -> dict[str, Any]:
    """The config dict in ``path``: TOML when the name ends in ``.toml``, JSON otherwise."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CliError(f"--config {path}: cannot read it: {e.strerror or e}") from e
    try:
        if file.suffix.lower() == ".toml":
            config = tomllib.loads(data.decode("utf-8"))
        else:
            config = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        kind = "TOML" if file.suffix.lower() == ".toml" else "JSON"
        raise CliError(f"--config {path}: not valid {kind}: {e}") from e
    if not isinstance(config, dict):
        raise CliError(
            f"--config {path}: expected an object at the top, found {type(config).__name__}"
        )
    return config


# -- output helpers ----------------------------------------------------------------------


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "") -> str:
    """A plain-text table; numbers are right-aligned, everything else left-aligned."""
    cells = [[str(h) for h in headers], *[[_cell(v) for v in row] for row in rows]]
    numeric = [
        all(isinstance(row[i], int | float) for row in rows) and bool(rows)
        for i in range(len(headers))
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(headers))]
    lines = []
    for line in cells:
        parts = [
            text.rjust(width) if numeric[i] else text.ljust(width)
            for i, (text, width) in enumerate(zip(line, widths, strict=True))
        ]
        lines.append(indent + "  ".join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)


def error_headline(last_error: str | None, width: int = 100) -> str:
    """The ``Type: message`` line of a stored ``last_error``, shortened to ``width``.

    ``last_error`` holds a whole traceback, whose first line ("Traceback (most recent call
    last):") says nothing; the exception's own line is the first unindented line after the last
    traceback header.
    """
    if not last_error:
        return ""
    lines = last_error.splitlines()
    headline = lines[0]
    headers = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent")]
    if headers:
        for line in lines[headers[-1] + 1 :]:
            if line and not line[0].isspace():
                headline = line
                break
    return headline if len(headline) <= width else headline[: width - 3] + "..."


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds")


def failed_rows(records: Sequence[JobRecord], width: int = 80) -> list[list[Any]]:
    """Rows of id, type, queue, attempts, failed at, error for a failed-jobs table."""
    return [
        [
            r.id,
            r.job_name,
            r.queue,
            r.attempts,
            _when(r.failed_at),
            error_headline(r.last_error, width),
        ]
        for r in records
    ]


FAILED_HEADERS = ("id", "type", "queue", "attempts", "failed at", "error")


def describe_summary(summary: WorkerSummary) -> str:
    """One line saying what a worker did and why it stopped."""
    reason = summary.stop_reason.value if summary.stop_reason else "unknown"
    return (
        f"worker stopped ({reason}): processed {summary.processed} "
        f"(completed {summary.completed}, retried {summary.retried}, failed {summary.failed}, "
        f"abandoned {summary.abandoned}), handed back {summary.released}"
    )


# -- commands ----------------------------------------------------------------------------


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
    from .demo import run_demo  # the demo's job classes register only when the demo runs

    report = await run_demo(jobs=args.jobs, driver=args.driver, path=args.path, out=out)
    return 0 if report.finished else 1


# -- argument parsing --------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be seconds >= 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``queuekit`` argument parser."""
    # -v/-q on every subcommand too; SUPPRESS keeps a subcommand from resetting the top level's.
    verbosity = argparse.ArgumentParser(add_help=False)
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log more (each job's start too)",
    )
    verbosity.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log warnings and errors only",
    )

    target = argparse.ArgumentParser(add_help=False)
    target.add_argument(
        "app",
        nargs="?",
        metavar="APP",
        help="module:attribute naming a QueueManager or a function returning one",
    )
    target.add_argument(
        "--config", metavar="FILE", help="config dict as JSON or TOML, instead of APP"
    )
    target.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first (the job classes); repeatable",
    )

    parser = argparse.ArgumentParser(
        prog="queuekit",
        parents=[verbosity],
        description="Background jobs: run workers, inspect queues.",
    )
    parser.add_argument("--version", action="version", version=f"queuekit {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", parents=[verbosity, target], help="run a worker")
    worker.add_argument(
        "--queues", metavar="A,B", help="queues to take jobs from, in order (default: all)"
    )
    worker.add_argument("--concurrency", type=_positive_int, metavar="N", help="jobs run at once")
    worker.add_argument("--max-jobs", type=_positive_int, metavar="N", help="stop after N jobs")
    worker.add_argument(
        "--delay", type=_seconds, metavar="S", help="pause S seconds after each job"
    )
    worker.add_argument(
        "--timeout", type=_positive_seconds, metavar="S", help="stop after S seconds"
    )
    worker.set_defaults(run=cmd_worker)

    stats = commands.add_parser("stats", parents=[verbosity, target], help="counts per queue")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=cmd_stats)

    failed = commands.add_parser(
        "failed", parents=[verbosity], help="list, retry or forget failed jobs"
    )
    actions = failed.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_ in (
        ("list", "list failed jobs, oldest failure first"),
        ("retry", "queue failed jobs again"),
        ("forget", "delete failed jobs"),
    ):
        sub = actions.add_parser(action, parents=[verbosity, target], help=help_)
        if action == "list":
            sub.add_argument("--queue", help="only this queue")
            sub.add_argument(
                "--limit", type=_positive_int, default=100, help="at most N (default 100)"
            )
            sub.add_argument("--json", action="store_true", help="print the records as JSON")
            sub.set_defaults(ids=[], all=False)
        else:
            sub.add_argument("ids", nargs="*", metavar="ID", help="failed job ids")
            sub.add_argument("--all", action="store_true", help="every failed job")
        sub.set_defaults(run=cmd_failed)

    purge = commands.add_parser(
        "purge", parents=[verbosity, target], help="delete a queue's waiting jobs"
    )
    purge.add_argument("queue", metavar="QUEUE")
    purge.set_defaults(run=cmd_purge)

    demo = commands.add_parser("demo", parents=[verbosity], help="run sample jobs through a worker")
    demo.add_argument(
        "--jobs", type=_positive_int, default=2000, metavar="N", help="jobs to run (2000)"
    )
    demo.add_argument(
        "--driver",
        choices=("sqlite", "file", "memory"),
        default="sqlite",
        help="store (default sqlite, memory if SQLite support is missing)",
    )
    demo.add_argument(
        "--path", metavar="DIR", help="keep the store in DIR (default: a temporary folder)"
    )
    demo.set_defaults(run=cmd_demo, app=None, config=None, imports=[])
    return parser


def _fix_positionals(args: argparse.Namespace) -> None:
    # ``failed retry --config q.json ID...``: argparse hands the first ID to the optional APP.
    if args.command == "failed" and args.config is not None and args.app is not None:
        args.ids = [args.app, *args.ids]
        args.app = None


def configure_logging(verbose: int, quiet: bool, *, job_events: bool = True) -> None:
    """Log the ``queuekit`` logger to stderr: INFO (each job's end), DEBUG with -v, WARNING
    with -q. The application's own loggers show warnings and errors.

    ``job_events=False`` (the demo without -v) hides the per-job lines of the ``queuekit.jobs``
    logger, while the other ``queuekit`` loggers (worker, drivers) still report problems.
    """
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.getLogger("queuekit").setLevel(level)
    if not (job_events or verbose):
        logging.getLogger("queuekit.jobs").setLevel(logging.CRITICAL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``queuekit`` command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _fix_positionals(args)
    verbose = getattr(args, "verbose", 0) or 0
    configure_logging(
        verbose, bool(getattr(args, "quiet", False)), job_events=args.command != "demo"
    )
    run: Callable[[argparse.Namespace, TextIO], Any] = args.run
    try:
        return asyncio.run(run(args, sys.stdout))
    except (CliError, ConfigError) as e:
        _report(e, verbose)
        return 2
    except QueueError as e:
        _report(e, verbose)
        return 1
    except KeyboardInterrupt:
        print("queuekit: interrupted", file=sys.stderr)
        return 130


def _report(error: Exception, verbose: int) -> None:
    if verbose:
        log.error("%s", error, exc_info=error)
    print(f"queuekit: error: {error}", file=sys.stderr)
