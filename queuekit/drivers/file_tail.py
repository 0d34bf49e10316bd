"""The file driver's live journal as one process writes it: appending, syncing, and the
preallocated room of zeros ahead of the lines.

A format 2 journal is extended with zeros well ahead of the writes, under the lock, and each
line overwrites zeros: an append does not change the file's size, so ``fdatasync`` has no size
to commit. Where the lines end is therefore the first NUL byte, not the file's end (see
``file_journal``), and the live journal never shrinks: a torn or failed write is zeroed, not
cut off, so the room other processes saw stays valid. A format 1 journal has no room; it is
written and cut back at the file's end.

``JournalTail`` is the base class of ``file_store.JournalStore`` rather than a part it holds:
appending and syncing run on every dispatch, and as the store's own methods they cost no call
more. Every method here blocks; those that write run under the store's lock unless their
docstring says otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..errors import DriverError
from .file_journal import datasync, used_length, zero_fill

__all__ = ["JournalTail"]

log = logging.getLogger("queuekit.drivers.file")

_PAGE = 4096


def _room(max_file_size: int) -> int:
    """Bytes of zeros a journal is extended by at a time: few extensions per journal, little
    unused room in a small one."""
    return min(1 << 20, max(max_file_size, 1 << 16))


def _whole_pages(size: int) -> int:
    return -(-size // _PAGE) * _PAGE


class JournalTail:
    """The descriptor on the live journal, where its lines end, and the room ahead of them.

    ``file_store.JournalStore`` builds on it: the store decides which file is the live journal
    and moves the offset past the lines other processes appended; this class writes at that
    offset, makes what it wrote durable, and keeps the room ahead of it.
    """

    def __init__(self, journal_path: Path, *, max_file_size: int, fsync: bool) -> None:
        self.journal_path = journal_path
        self.fsync = fsync
        self._fd = -1
        #: (device, inode) of the file open as ``_fd``, to tell whether the name still means it.
        self._file_id: tuple[int, int] | None = None
        #: Where the applied lines end, and how much of them ``flush`` made durable.
        self._offset = 0
        self._synced = 0
        #: Whether the live journal is preallocated (format 2), and the size it was last seen
        #: with: writes below it overwrite zeros and leave the size alone.
        self._preallocated = False
        self._allocated = 0
        self._room = _room(max_file_size)
        #: Set when a write failed: the store reloads before the next operation.
        self._stale = False

    def _open_tail(self, fd: int, offset: int, preallocated: bool) -> None:
        """Write to the journal open as ``fd`` from ``offset`` on, closing the one before."""
        if self._fd >= 0:
            os.close(self._fd)
        st = os.fstat(fd)
        self._fd, self._file_id = fd, (st.st_dev, st.st_ino)
        self._offset, self._synced = offset, offset
        self._preallocated, self._allocated = preallocated, st.st_size

    # -- writing ---------------------------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Append whole lines at the end of the journal, all or nothing."""
        start = self._offset
        stop = start + len(data)
        try:
            if self._preallocated and stop > self._allocated:
                self._extend(stop)
            written = os.pwrite(self._fd, data, start)
            if written < len(data):  # rare: a signal or a full disk cut the write short
                view = memoryview(data)[written:]
                while view:
                    view = view[os.pwrite(self._fd, view, stop - len(view)) :]
        except OSError as e:
            # Cut back to where the batch began so no half batch stays behind; reload on the
            # next operation because the replica already holds the batch.
            with contextlib.suppress(OSError):
                self._cut(self._fd, start, stop)
            self._stale = True
            raise DriverError(
                f"file queue {self.journal_path}: cannot append to the journal ({e})"
            ) from e
        self._offset = stop

    def _extend(self, stop: int) -> None:
        """Make the journal at least ``stop`` bytes long, adding room to write into.

        Zeros written, not ``posix_fallocate``: on ext4 a write into fallocated blocks still
        converts their extent, a metadata change that each ``fdatasync`` would commit. The
        first sync after an extension pays for its size change once; the others overwrite.
        """
        size = os.fstat(self._fd).st_size  # another process may have extended it already
        if size < stop:
            new_size = _whole_pages(stop + self._room)
            zero_fill(self._fd, size, new_size)
            size = new_size
        self._allocated = size

    def flush(self) -> None:
        """Make appended lines durable (``fsync: true``). Needs no lock.

        Every line appended before it is on disk when it returns; concurrent operations batched
        in one append share one fsync (group commit).
        """
        if not self.fsync or self._synced >= self._offset:
            return
        offset = self._offset
        try:
            datasync(self._fd)
        except OSError as e:
            raise DriverError(f"file queue {self.journal_path}: fsync failed ({e})") from e
        self._synced = offset

    # -- cutting back ----------------------------------------------------------------------

    def _cut(self, fd: int, start: int, stop: int) -> None:
        """Remove bytes ``start`` to ``stop``, the written end of the live journal."""
        if self._preallocated:
            zero_fill(fd, start, stop)  # its size stays: other processes' room stays valid
        else:
            os.ftruncate(fd, start)

    def _clear_tail(self, end: int) -> None:
        """Remove whatever follows the last whole line of the live journal, as loaded.

        That is the torn last line already warned about and, after a power cut, blocks of an
        unacknowledged write that reached the disk while an earlier block did not (reading
        stopped at the zeros between): left there, the next lines would run into them.
        """
        if not self._preallocated:
            if self._allocated > end:
                os.ftruncate(self._fd, end)
                self._allocated = end
            return
        tail = os.pread(self._fd, max(self._allocated - end, 0), end)
        first = used_length(tail)
        if tail[first:].strip(b"\0"):
            log.warning(
                "file queue %s: cleared bytes past the end of the journal (an unacknowledged "
                "write cut short by a crash of the machine)",
                self.journal_path,
            )
        if tail.strip(b"\0"):
            zero_fill(self._fd, end, end + len(tail.rstrip(b"\0")))

    # -- replacing the journal -------------------------------------------------------------

    def _fresh_journal(self, header: bytes) -> bytes:
        """What a new journal starts as: ``header``, then its first room, to whole pages."""
        return header.ljust(_whole_pages(len(header) + self._room), b"\0")

    def _shed_room(self) -> None:
        """Cut the room off the live journal, which ends at our offset, before it is archived:
        the room would only weigh down the backups, and readers still on it stop at the end
        either way."""
        if self._preallocated:
            os.ftruncate(self._fd, self._offset)
            self._allocated = self._offset
