"""Plain-text tables and one-line summaries printed by the command line."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..record import JobRecord
from ..worker import WorkerSummary

__all__ = ["describe_summary", "error_headline", "failed_rows", "render_table"]


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
