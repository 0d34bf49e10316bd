"""The file driver's store as one process sees it: the lock, following the journal as other
processes append to it, compaction and loading, which replace it.

For ``path = storage/queue/jobs.json`` the store is these files, all in one folder::

    jobs.json                 snapshot: {"format", "generation", "written_at", "jobs", "failed"}
    jobs.json.journal         a header line, then one JSON line per operation since the snapshot,
                              then zeros: room preallocated for the next lines
    jobs.json.1 ... .N        earlier snapshots, newest first (``max_backups``)
    jobs.json.journal.1 ...   the journal that followed each of them
    jobs.json.lock            the lock every process takes for each batch of operations; it also
                              holds a counter bumped whenever the journal is replaced
    *.damaged-<time>          damaged files that recovery set aside; queuekit never deletes them

Appending to the journal and its preallocated room are in ``file_tail``, the formats in
``file_snapshot`` and ``file_journal``, loading and recovery in ``file_recovery``, the thread
that runs all of this in ``file_io``. Every method here blocks; the driver runs them on its
I/O thread. Methods that read or write the journal run under ``locked()`` unless their
docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from filelock import lock_descriptor, unlock_descriptor

from ..errors import CorruptStoreError, DriverError
from .file_io import IOThread, wake
from .file_journal import (
    JOURNAL_FORMAT,
    Replica,
    journal_header,
    read_from,
    read_header,
    replay,
    warn_torn,
)
from .file_recovery import load_store
from .file_snapshot import (
    SNAPSHOT_FORMAT,
    fsync_dir,
    link_or_copy,
    rotate_backups,
    write_snapshot,
    write_synced,
)
from .file_tail import JournalTail

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JOURNAL_FORMAT",
    "SNAPSHOT_FORMAT",
    "IOThread",
    "JournalStore",
    "Replica",
    "wake",
]

log = logging.getLogger("queuekit.drivers.file")

#: Where the lock file holds its change counter: past the byte Windows locks.
_EPOCH_AT = 8


class _Read(NamedTuple):
    """How far reading the journal got."""

    #: Offset just past the last complete line, all of them applied.
    end: int
    #: Offset just past a torn last line after them (``end`` if there is none).
    torn_end: int
    #: Whether the read ended in preallocated room with no torn line: nothing more to know
    #: about the file, unless another process replaced it.
    settled: bool


class JournalStore(JournalTail):
    """One store on disk, seen from one process.

    It keeps a descriptor on the journal and the byte offset it has applied up to, so catching
    up on what other processes appended reads only the new bytes: those before the first NUL,
    since a preallocated journal's size says nothing about where its lines end. Writers extend
    it with zeros well ahead of the lines, under the lock, and the size of the live journal
    never shrinks (a torn line is zeroed, not cut off). Whoever replaces the journal (a
    compaction, a reload that recovers) first bumps a counter in the lock file, so the others
    look at the journal's name only when that counter moved. A compaction by another process
    replaces the journal file; the old descriptor still reads the old journal to its end, and the
    new journal's header names its generation, so a process that was up to date follows on
    without reloading the snapshot.
    """

    def __init__(self, path: Path, *, max_file_size: int, max_backups: int, fsync: bool) -> None:
        super().__init__(
            path.with_name(path.name + ".journal"), max_file_size=max_file_size, fsync=fsync
        )
        self.path = path
        self._journal_name = os.fspath(self.journal_path)  # stat()ed on every operation
        self.lock_path = path.with_name(path.name + ".lock")
        self.max_file_size = max_file_size
        self.max_backups = max_backups
        #: What the last full load found wrong (one message per problem); empty when all was well.
        self.problems: list[str] = []
        self._lock_fd = -1
        self._epoch = b""
        self._generation = 0
        self._retry_compact_at = 0
        self._record_bytes = 400.0  # average size of a record in the snapshot, measured

    # -- opening, locking ------------------------------------------------------------------

    def open(self, replica: Replica) -> None:
        """Create the folder and lock file, then load the store (creating it if new)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DriverError(f"file queue {self.path}: cannot open the store ({e})") from e
        with self.locked():
            self._load(replica)

    def close(self) -> None:
        """Close the descriptors (safe to call twice)."""
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cross-process lock (filelock's native lock on the lock file's descriptor)."""
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    def lock(self) -> None:
        """Take the cross-process lock, waiting for another process that holds it."""
        if not lock_descriptor(self._lock_fd, blocking=False):
            if fcntl is not None:
                # Wait in the kernel: a blocked flock wakes the moment the holder lets go, where
                # filelock's own blocking wait sleeps between tries.
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows
                lock_descriptor(self._lock_fd, blocking=True, poll_interval=0.001)

    def unlock(self) -> None:
        """Let go of the cross-process lock."""
        unlock_descriptor(self._lock_fd)

    # -- following the journal -------------------------------------------------------------

    def unchanged(self) -> bool:
        """True if nobody wrote since this process last caught up. Needs no lock: a read of
        the change counter and of the byte where the next line would start (a ``stat`` where
        that is the file's end)."""
        if self._stale:
            return False
        try:
            if os.pread(self._lock_fd, 8, _EPOCH_AT) != self._epoch:
                return False
            byte = os.pread(self._fd, 1, self._offset)
            if byte:
                return byte == b"\0"
            st = os.stat(self._journal_name)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self._file_id and st.st_size == self._offset

    def catch_up(self, replica: Replica) -> None:
        """Apply what other processes appended since the last call (under the lock).

        Usually two reads: the change counter, then new lines, if any, up to the preallocated
        room. Only when the counter moved or that read ends otherwise (a format 1 journal, a
        full one, a torn line) does it ``stat`` the journal's name. Not on every operation: on
        Linux a ``stat`` between two writes makes the kernel give the second one a fine-grained
        timestamp, which ``fdatasync`` then commits, and that costs about what preallocation
        saves.
        """
        if self._stale:
            self._load(replica)
            return
        epoch = os.pread(self._lock_fd, 8, _EPOCH_AT)
        read = self._read(replica, self._fd, self._offset)
        self._offset = read.end
        if read.settled and epoch == self._epoch:
            return
        self._epoch = epoch
        try:
            st = os.stat(self._journal_name)
        except FileNotFoundError:
            self._load(replica)
            return
        if (st.st_dev, st.st_ino) == self._file_id:
            if st.st_size < self._offset:
                log.error("file queue %s: the journal shrank under us; reloading", self.path)
                self._load(replica)
            elif read.torn_end > read.end:
                # Under the lock a partial last line can only be a writer that died mid-write,
                # before its call returned: nothing acknowledged is dropped, and the next
                # append must not be glued onto it.
                self._cut(self._fd, read.end, read.torn_end)
            return
        # Another process compacted. Its snapshot holds everything in the old journal, which
        # our descriptor still reads (a renamed file stays open) and which we just read to its
        # end; follow the new journal if it is the very next generation. Any other jump, or a
        # torn line left in the old journal, means a reload.
        try:
            fd = os.open(self.journal_path, os.O_RDWR)
        except FileNotFoundError:
            self._load(replica)
            return
        try:
            header = read_header(fd, self.journal_path)
            follows = header.generation == self._generation + 1 and read.torn_end == read.end
        except CorruptStoreError:
            follows = False
        if not follows:
            os.close(fd)
            self._load(replica)
            return
        self._adopt(fd, header.generation, header.end, header.preallocated)
        read = self._read(replica, fd, header.end)
        if read.torn_end > read.end:
            self._cut(fd, read.end, read.torn_end)
        self._offset = self._synced = read.end

    def _adopt(self, fd: int, generation: int, offset: int, preallocated: bool) -> None:
        self._open_tail(fd, offset, preallocated)
        self._generation = generation
        self._retry_compact_at = 0

    def _read(self, replica: Replica, fd: int, offset: int) -> _Read:
        """Apply the complete lines from ``offset`` on; say where they and a torn one end."""
        data, room = read_from(fd, offset)
        if not data:
            return _Read(offset, offset, room)
        damaged = functools.partial(self._damaged_line, self.journal_path, self._generation)
        end = replay(replica, data, offset, damaged)
        if end < len(data):
            warn_torn(self.journal_path, data[end:])
        return _Read(offset + end, offset + len(data), room and end == len(data))

    def _damaged_line(
        self, source: Path, generation: int, pos: int, line: bytes, error: Exception
    ) -> None:
        self._problem(
            f"file queue {source}: damaged journal line at byte {pos} skipped "
            f"({type(error).__name__}: {error}): {line[:200]!r}"
        )
        # Keep the damaged bytes for a human: the journal itself is archived and later rotated
        # away by compaction, the hard link is not. One link per journal generation.
        keep = source.with_name(f"{source.name}.damaged-g{generation}")
        if not keep.exists():
            with contextlib.suppress(OSError):
                link_or_copy(source, keep)

    # -- compaction ------------------------------------------------------------------------

    def compaction_due(self, replica: Replica) -> bool:
        """True once the journal passed ``max_file_size`` and the size of a fresh snapshot.

        Compaction rewrites every stored job, so it also waits until the journal is as large as
        their snapshot would be: its cost stays O(1) per operation however many jobs the store
        holds, and a drained store compacts back to a small snapshot soon.
        """
        if self._offset < max(self.max_file_size, self._retry_compact_at):
            return False
        return self._offset >= replica.count() * self._record_bytes

    def maybe_compact(self, replica: Replica) -> None:
        """Compact once it is due; a failure is logged, never raised (every operation is still
        in the journal)."""
        if not self.compaction_due(replica):
            return
        try:
            self.compact(replica)
        except OSError as e:
            log.error("file queue %s: compaction failed, will retry later: %s", self.path, e)
            self._retry_compact_at = self._offset + self.max_file_size

    def compact(self, replica: Replica, *, generation: int | None = None) -> None:
        """Write the replica as a new snapshot and start an empty journal, rotating backups.

        Crash-safe order: the new files are complete and fsynced before any rename; the old
        snapshot and journal are hard-linked into the backups before they are replaced, so the
        snapshot and journal names always exist. A crash in between leaves a journal older than
        the snapshot, which loading recognises by its generation.
        """
        caught_up = generation is None
        generation = self._generation + 1 if generation is None else generation
        self._bump_epoch()
        header = journal_header(generation)
        jobs, failed = replica.dump()
        tmp = self.path.with_name(self.path.name + ".tmp")
        journal_tmp = self.journal_path.with_name(self.journal_path.name + ".tmp")
        try:
            size = write_snapshot(tmp, generation, jobs, failed)
            self._record_bytes = size / max(len(jobs) + len(failed), 1)
            write_synced(journal_tmp, self._fresh_journal(header))
            if caught_up:  # only then does the journal being archived end at our offset
                self._shed_room()
            rotate_backups((self.path, self.journal_path), self.max_backups)
            os.replace(tmp, self.path)
            os.replace(journal_tmp, self.journal_path)
            fsync_dir(self.path.parent)
        finally:
            for leftover in (tmp, journal_tmp):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        fd = os.open(self.journal_path, os.O_RDWR)
        self._adopt(fd, generation, len(header), preallocated=True)

    def _bump_epoch(self) -> None:
        """Tell every other process to look at the journal's name at its next operation.

        Done before anything is replaced or set aside: a process that dies halfway leaves the
        others looking, never appending to a journal that is no longer the live one.
        """
        current = int.from_bytes(os.pread(self._lock_fd, 8, _EPOCH_AT).ljust(8, b"\0"), "big")
        self._epoch = ((current + 1) % (1 << 64)).to_bytes(8, "big")
        os.pwrite(self._lock_fd, self._epoch, _EPOCH_AT)

    def invalidate(self) -> None:
        """Reload everything from disk before the next operation (after an unexpected error)."""
        self._stale = True

    # -- loading ---------------------------------------------------------------------------

    def _load(self, replica: Replica) -> None:
        """Rebuild the replica from disk (see ``file_recovery``) and follow the live journal."""
        self.problems = []
        self._stale = False
        self._bump_epoch()  # recovery may set the journal aside and replace it
        loaded = load_store(
            self.path,
            self.journal_path,
            self.max_backups,
            replica,
            self._problem,
            self._damaged_line,
        )
        if loaded.new:
            self._generation = -1
            self.compact(replica, generation=0)
            return
        if loaded.record_bytes is not None:
            self._record_bytes = loaded.record_bytes
        self._generation = loaded.generation
        if loaded.live_end is not None:
            fd = os.open(self.journal_path, os.O_RDWR)
            try:
                header = read_header(fd, self.journal_path)
                self._adopt(fd, loaded.generation, loaded.live_end, header.preallocated)
            except BaseException:
                os.close(fd)
                raise
            self._clear_tail(loaded.live_end)
            return
        self.compact(replica, generation=loaded.next_generation)
        if self.problems:
            log.error(
                "file queue %s: recovered what could be read (%d problems above) and wrote a "
                "fresh snapshot; damaged files were kept",
                self.path,
                len(self.problems),
            )

    def _problem(self, message: str) -> None:
        log.error("%s", message)
        self.problems.append(message)
