"""The file driver's snapshot: its format, its atomic writing and the numbered backups.

A snapshot is one JSON object, one record per line so a person can read and grep it::

    {"format": "queuekit.file/1", "generation": 3, "written_at": 1732521600.0,
    "jobs": [
    {...one stored record...}
    ],
    "failed": [
    ]}

A hand-written ``{"jobs": [...]}`` is read too (format and generation default). Backups are the
same files numbered ``jobs.json.1`` (newest) ... ``jobs.json.N``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import codec
from ..errors import CorruptStoreError
from ..record import JobRecord

__all__ = [
    "SNAPSHOT_FORMAT",
    "Snapshot",
    "fsync_dir",
    "link_or_copy",
    "numbered",
    "read_snapshot",
    "rotate_backups",
    "set_aside",
    "write_snapshot",
    "write_synced",
]

SNAPSHOT_FORMAT = "queuekit.file/1"


@dataclass(slots=True)
class Snapshot:
    """A snapshot as read from ``path``: its generation, records and size in bytes."""

    generation: int
    jobs: list[JobRecord]
    failed: list[JobRecord]
    path: Path
    size: int


def read_snapshot(path: Path) -> tuple[Snapshot, list[str]]:
    """Parse a snapshot; returns it with one message per record that had to be skipped.

    Raises ``CorruptStoreError`` naming the file when it cannot be used at all.
    """
    try:
        raw = path.read_bytes()
        data = codec.loads(raw)
    except (OSError, ValueError) as e:
        raise CorruptStoreError(f"file queue {path}: the snapshot is not valid JSON ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), list):
        raise CorruptStoreError(
            f'file queue {path}: expected a JSON object with a "jobs" list, '
            f"found {type(data).__name__}"
        )
    fmt, generation = data.get("format", SNAPSHOT_FORMAT), data.get("generation", 0)
    failed_raw = data.get("failed", [])
    if (
        fmt != SNAPSHOT_FORMAT
        or not isinstance(generation, int)
        or not isinstance(failed_raw, list)
    ):
        raise CorruptStoreError(
            f"file queue {path}: unsupported snapshot (format {fmt!r}, generation "
            f"{generation!r}); this release reads {SNAPSHOT_FORMAT!r}"
        )
    damaged: list[str] = []
    lists: dict[str, list[JobRecord]] = {"jobs": [], "failed": []}
    for key, items in (("jobs", data["jobs"]), ("failed", failed_raw)):
        for i, item in enumerate(items):
            try:
                lists[key].append(
                    JobRecord.from_json(item, source=f"file queue {path}: {key}[{i}]")
                )
            except CorruptStoreError as e:
                damaged.append(f"{e} (record skipped)")
    return Snapshot(generation, lists["jobs"], lists["failed"], path, len(raw)), damaged


def write_snapshot(
    path: Path, generation: int, jobs: list[JobRecord], failed: list[JobRecord]
) -> int:
    """Write and fsync a snapshot at ``path`` (a temporary name); returns its size."""
    head = {"format": SNAPSHOT_FORMAT, "generation": generation, "written_at": time.time()}
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(head)[:-1] + ',\n"jobs": [\n')
        f.write(",\n".join(codec.dumps(r.to_json()) for r in jobs))
        f.write('\n],\n"failed": [\n')
        f.write(",\n".join(codec.dumps(r.to_json()) for r in failed))
        f.write("\n]}\n")
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` as the whole of ``path`` and fsync it."""
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def numbered(path: Path, k: int) -> Path:
    """The ``k``-th backup of ``path`` (``jobs.json.1`` is the newest)."""
    return path.with_name(f"{path.name}.{k}")


def rotate_backups(bases: tuple[Path, ...], max_backups: int) -> None:
    """Shift each base's backups up by one, dropping the oldest, and keep the base as ``.1``.

    The base is hard-linked, not moved, so its name exists at every instant.
    """
    if max_backups <= 0:
        return
    for base in bases:
        for k in range(max_backups - 1, 0, -1):
            older = numbered(base, k)
            if older.exists():
                os.replace(older, numbered(base, k + 1))
        newest = numbered(base, 1)
        with contextlib.suppress(FileNotFoundError):
            newest.unlink()
        if base.exists():
            link_or_copy(base, newest)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` as ``dst``; copy it on a filesystem without hard links."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def set_aside(path: Path) -> Path:
    """Rename a damaged file to ``<name>.damaged-<time>`` (never overwriting one); return it."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, target)
    return target


def fsync_dir(path: Path) -> None:
    """Make renames in folder ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
