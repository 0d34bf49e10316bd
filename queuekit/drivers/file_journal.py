"""The file driver's journal format: a header line, then one JSON operation per line.

::

    {"op": "begin", "format": "queuekit.file.journal/1", "generation": 3, "at": 1732521600.0}
    {"op":"push","jobs":[{...record...}]}
    {"op":"reserve","leases":[["<id>","<token>",1732521690.2]]}

The header names the snapshot generation the journal follows. A line is applied only once it
ends with a newline: a last line without one is a write cut short by a crash, never acknowledged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .. import codec
from ..errors import CorruptStoreError
from ..record import JobRecord

__all__ = [
    "JOURNAL_FORMAT",
    "LINE_ERRORS",
    "Replica",
    "datasync",
    "encode_line",
    "journal_header",
    "parse_header",
    "read_from",
    "read_header",
    "replay",
    "warn_torn",
]

log = logging.getLogger("queuekit.drivers.file")

JOURNAL_FORMAT = "queuekit.file.journal/1"
#: What applying a malformed line raises; such a line is skipped and reported, never fatal.
LINE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, CorruptStoreError)

#: ``fdatasync`` where the platform has it: an append's size change is still flushed, the
#: file's times are not.
datasync: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


class Replica(Protocol):
    """The in-memory copy of the store that journal lines are applied to."""

    def reset(self, jobs: list[JobRecord], failed: list[JobRecord]) -> None:
        """Replace everything with a snapshot's jobs (in push order) and failed jobs."""

    def apply(self, op: dict[str, Any]) -> Any:
        """Apply one journal operation; raise ValueError/KeyError/TypeError if it is malformed."""

    def dump(self) -> tuple[list[JobRecord], list[JobRecord]]:
        """Jobs in push order and failed jobs in failure order, for a snapshot."""

    def count(self) -> int:
        """How many records (jobs and failed jobs) the store holds."""


def encode_line(op: dict[str, Any]) -> bytes:
    """One operation as a compact JSON line; ``TypeError`` if something in it is not JSON."""
    return codec.dumps_bytes(op) + b"\n"


def journal_header(generation: int) -> bytes:
    """The first line of the journal that follows snapshot ``generation``."""
    head = {"op": "begin", "format": JOURNAL_FORMAT, "generation": generation, "at": time.time()}
    return json.dumps(head).encode() + b"\n"


def parse_header(data: bytes, path: Path) -> tuple[int, int]:
    """(generation, length of the header line) of a journal's first bytes.

    Raises ``CorruptStoreError`` naming ``path`` when they are not a journal header.
    """
    end = data.find(b"\n")
    try:
        head = json.loads(data[:end]) if end >= 0 else None
    except ValueError:
        head = None
    if (
        not isinstance(head, dict)
        or head.get("op") != "begin"
        or head.get("format") != JOURNAL_FORMAT
        or not isinstance(head.get("generation"), int)
    ):
        raise CorruptStoreError(
            f"file queue {path}: not a journal (expected a first line like "
            f'{{"op": "begin", "format": "{JOURNAL_FORMAT}", "generation": N}}, '
            f"found {data[:80]!r})"
        )
    return head["generation"], end + 1


def read_header(fd: int, path: Path) -> tuple[int, int]:
    """``parse_header`` of the journal open as ``fd``."""
    return parse_header(os.pread(fd, 4096, 0), path)


def read_from(fd: int, offset: int) -> bytes:
    """Every byte of ``fd`` from ``offset`` to its end."""
    chunks = []
    while chunk := os.pread(fd, 1 << 22, offset + sum(map(len, chunks))):
        chunks.append(chunk)
    return b"".join(chunks)


def replay(
    replica: Replica,
    data: bytes,
    base: int,
    damaged: Callable[[int, bytes, Exception], None],
) -> int:
    """Apply each complete line of ``data``; return the length through the last newline.

    ``base`` is the offset of ``data`` in its file; a line that cannot be applied is passed to
    ``damaged(offset, line, error)`` and skipped.
    """
    end = data.rfind(b"\n") + 1
    pos = base
    for line in data[:end].split(b"\n")[:-1]:
        try:
            replica.apply(codec.loads(line))
        except LINE_ERRORS as e:
            damaged(pos, line, e)
        pos += len(line) + 1
    return end


def warn_torn(path: Path, tail: bytes) -> None:
    """Log the torn last line of ``path`` that is being skipped."""
    log.warning(
        "file queue %s: skipped a torn last line (%d bytes; a write cut short by a crash, "
        "never acknowledged): %r",
        path,
        len(tail),
        tail[:200],
    )
