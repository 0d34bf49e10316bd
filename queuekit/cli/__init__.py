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
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .. import __version__
from ..errors import ConfigError, QueueError
from .commands import cmd_demo, cmd_failed, cmd_purge, cmd_stats, cmd_worker
from .loader import CliError, load_manager
from .output import error_headline, render_table

log = logging.getLogger("queuekit.cli")

__all__ = ["CliError", "build_parser", "error_headline", "load_manager", "main", "render_table"]

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
