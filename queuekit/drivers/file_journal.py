"""The file driver's journal format: a header line, then one JSON operation per line.

::

    {"op": "begin", "format": "queuekit.file.journal/2", "generation": 3, "at": 1732521600.0}
    {"op":"push","jobs":[{...record...}]}
    {"op":"reserve","leases":[["<id>","<token>",1732521690.2]]}

The header names the snapshot generation the journal follows. A line is applied only once it
ends with a newline: a last line without one is a write cut short by a crash, never acknowledged.

Format 2 journals are preallocated: the file is extended with zeros ahead of the writes, which
overwrite them, so an append does not change the file's size and ``fdatasync`` has no metadata
to commit. The journal therefore ends at its first NUL byte, not at the end of the file: JSON
never holds a raw NUL, so the zeros after the last line are room not yet written, not damage.
Format 1 journals (never preallocated) are read the same way and followed without
preallocation until the next compaction starts a format 2 journal.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from .. import codec
from ..errors import CorruptStoreError
from ..record import JobRecord

__all__ = [
    "JOURNAL_FORMAT",
    "LEGACY_FORMAT",
    "LINE_ERRORS",
    "Header",
    "Replica",
    "datasync",
    "encode_line",
    "journal_header",
    "parse_header",
    "read_from",
    "read_header",
    "replay",
    "used_length",
    "warn_torn",
    "zero_fill",
]

log = logging.getLogger("queuekit.drivers.file")

JOURNAL_FORMAT = "queuekit.file.journal/2"
#: Journals written before preallocation: still read and followed, never preallocated.
LEGACY_FORMAT = "queuekit.file.journal/1"
#: What applying a malformed line raises; such a line is skipped and reported, never fatal.
LINE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, CorruptStoreError)

#: ``fdatasync`` where the platform has it: the file's times are not flushed (and, in a
#: preallocated journal, its size does not change), so it has no metadata to commit.
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


class Header(NamedTuple):
    """What a journal's first line says."""

    #: The snapshot generation the journal follows.
    generation: int
    #: Length of the header line: where the operations begin.
    end: int
    #: Whether writers preallocate it (format 2); a format 1 journal ends where the file does.
    preallocated: bool


def journal_header(generation: int) -> bytes:
    """The first line of the journal that follows snapshot ``generation``."""
    head = {"op": "begin", "format": JOURNAL_FORMAT, "generation": generation, "at": time.time()}
    return json.dumps(head).encode() + b"\n"


def parse_header(data: bytes, path: Path) -> Header:
    """The header of a journal, from its first bytes.

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
        or head.get("format") not in (JOURNAL_FORMAT, LEGACY_FORMAT)
        or not isinstance(head.get("generation"), int)
    ):
        raise CorruptStoreError(
            f"file queue {path}: not a journal (expected a first line like "
            f'{{"op": "begin", "format": "{JOURNAL_FORMAT}", "generation": N}}, '
            f"found {data[:80]!r})"
        )
    return Header(head["generation"], end + 1, head["format"] == JOURNAL_FORMAT)


def read_header(fd: int, path: Path) -> Header:
    """``parse_header`` of the journal open as ``fd``."""
    return parse_header(os.pread(fd, 4096, 0), path)


def used_length(data: bytes) -> int:
    """Where a journal's written bytes end: at the first NUL (the preallocated room), else at
    the end of ``data``."""
    end = data.find(0)
    return len(data) if end < 0 else end


def read_from(fd: int, offset: int) -> tuple[bytes, bool]:
    """The written bytes of ``fd`` from ``offset`` on, up to the first NUL or the file's end,
    and whether a NUL (preallocated room) ended them.

    The first read is small: it runs on every operation, and usually finds a line or two
    followed by the preallocated zeros, or the zeros straight away.
    """
    chunks: list[bytes] = []
    size = 1 << 12
    while chunk := os.pread(fd, size, offset):
        end = used_length(chunk)
        chunks.append(chunk[:end])
        if end < len(chunk):
            return b"".join(chunks), True
        offset += end
        size = 1 << 22
    return b"".join(chunks), False


def zero_fill(fd: int, start: int, stop: int) -> None:
    """Overwrite bytes ``start`` to ``stop`` of ``fd`` with zeros (unwritten room again)."""
    while start < stop:
        start += os.pwrite(fd, bytes(min(stop - start, 1 << 22)), start)


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
