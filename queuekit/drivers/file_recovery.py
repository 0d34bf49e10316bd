"""Loading the file driver's store from disk, recovering what it can from damaged files.

Loading never silently drops data: every problem is reported (and logged at ERROR by the
store), damaged files are renamed aside rather than overwritten, and every readable job comes
back. A damaged snapshot falls back to the newest good backup plus the journals that followed it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CorruptStoreError
from .file_journal import Replica, parse_header, replay, used_length, warn_torn
from .file_snapshot import Snapshot, numbered, read_snapshot, set_aside

__all__ = ["Loaded", "load_store"]

#: Reports one problem (a message naming the file and what is wrong).
Problem = Callable[[str], None]
#: Reports a damaged journal line: (journal, its generation, byte offset, line, error).
DamagedLine = Callable[[Path, int, int, bytes, Exception], None]


@dataclass(slots=True)
class Loaded:
    """Where loading left the replica, and how the store goes on from there."""

    #: No store existed: nothing was loaded, a first snapshot is to be written.
    new: bool = False
    #: The generation of the newest journal applied.
    generation: int = 0
    #: Bytes of the live journal applied, when the snapshot and live journal can simply be
    #: followed on; None when a fresh snapshot must be written (after a recovery).
    live_end: int | None = None
    #: The generation for that fresh snapshot.
    next_generation: int = 0
    #: Average bytes per record in the snapshot read, if it held any.
    record_bytes: float | None = None


def load_store(
    path: Path,
    journal_path: Path,
    max_backups: int,
    replica: Replica,
    problem: Problem,
    damaged_line: DamagedLine,
) -> Loaded:
    """Rebuild ``replica`` from the best snapshot and the journals that follow it."""
    found: list[str] = []

    def report(message: str) -> None:
        found.append(message)
        problem(message)

    journals = _journals(journal_path, max_backups, report)
    snapshot = _best_snapshot(path, max_backups, report)
    if snapshot is None and not journals and not found:
        replica.reset([], [])
        return Loaded(new=True)
    start = snapshot.generation if snapshot else min((g for g, _ in journals), default=0)
    if snapshot is None:
        report(f"file queue {path}: no readable snapshot; rebuilt from journals")
    elif not journal_path.exists():
        report(
            f"file queue {journal_path}: the journal is missing; operations after "
            f"snapshot generation {start} are lost"
        )
    replica.reset(snapshot.jobs if snapshot else [], snapshot.failed if snapshot else [])
    loaded = Loaded(generation=start)
    if snapshot is not None and (records := len(snapshot.jobs) + len(snapshot.failed)):
        loaded.record_bytes = snapshot.size / records
    expected, newest, live_end = start, start, -1
    for generation, journal in journals:
        if generation < start:
            continue  # already in the snapshot (a crash between two renames of compaction)
        if generation != expected:
            report(
                f"file queue {path}: journals of generations {expected}..{generation - 1}"
                " are missing; the operations they held are lost"
            )
        data = journal.read_bytes()
        data = data[: used_length(data)]  # the rest is preallocated room
        header_end = parse_header(data, journal).end

        damaged = functools.partial(damaged_line, journal, generation)
        end = header_end + replay(replica, data[header_end:], header_end, damaged)
        if end < len(data):
            warn_torn(journal, data[end:])
        if journal == journal_path:
            live_end = end
        expected, newest = generation + 1, generation
    loaded.generation = newest
    clean = (
        not found
        and snapshot is not None
        and snapshot.path == path
        and bool(journals)
        and journals[-1] == (snapshot.generation, journal_path)
    )
    if clean:
        loaded.live_end = live_end
    else:
        # Skip a generation: a process still running on the old files must reload rather
        # than follow on, since what was recovered may differ from what it holds.
        loaded.next_generation = max(newest, start) + 2
    return loaded


def _journals(journal_path: Path, max_backups: int, report: Problem) -> list[tuple[int, Path]]:
    """Readable journals as (generation, path), oldest first; the live one wins a tie."""
    found: dict[int, Path] = {}
    candidates = [journal_path] + [numbered(journal_path, k) for k in range(1, max_backups + 1)]
    for path in candidates:
        try:
            with path.open("rb") as f:
                generation = parse_header(f.read(4096), path).generation
        except FileNotFoundError:
            continue
        except (OSError, CorruptStoreError) as e:
            report(f"{e}; set aside as {set_aside(path)}")
            continue
        found.setdefault(generation, path)
    return sorted(found.items())


def _best_snapshot(path: Path, max_backups: int, report: Problem) -> Snapshot | None:
    """The newest readable snapshot; damaged ones are renamed aside, never overwritten."""
    candidates = [path] + [numbered(path, k) for k in range(1, max_backups + 1)]
    for candidate in candidates:
        if not candidate.exists():
            if candidate == path and any(p.exists() for p in candidates[1:]):
                report(f"file queue {candidate}: the snapshot is missing")
            continue
        try:
            snapshot, damaged = read_snapshot(candidate)
        except CorruptStoreError as e:
            report(f"{e}; set aside as {set_aside(candidate)}")
            continue
        if damaged:
            for message in damaged:
                report(message)
            report(f"file queue {candidate}: set aside as {set_aside(candidate)}")
        return snapshot
    return None
