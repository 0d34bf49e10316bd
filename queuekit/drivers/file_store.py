"""The file driver's storage: journal, snapshot, backups, recovery and the cross-process lock.

For ``path = storage/queue/jobs.json`` the store is these files, all in one folder::

    jobs.json                 snapshot: {"format", "generation", "written_at", "jobs", "failed"}
    jobs.json.journal         a header line, then one JSON line per operation since the snapshot
    jobs.json.1 ... .N        earlier snapshots, newest first (``max_backups``)
    jobs.json.journal.1 ...   the journal that followed each of them
    jobs.json.lock            the lock every process takes for each batch of operations
    *.damaged-<time>          damaged files that recovery set aside; queuekit never deletes them

Every method here blocks; the driver runs them on its own I/O thread. Methods that read or write
the journal run under ``locked()`` unless their docstring says otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from filelock import lock_descriptor, unlock_descriptor

from ..errors import CorruptStoreError, DriverError
from ..record import JobRecord

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

SNAPSHOT_FORMAT = "queuekit.file/1"
JOURNAL_FORMAT = "queuekit.file.journal/1"
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_MAX_BATCH = 512  # operations sharing one lock acquisition, write and fsync
_LINE_ERRORS = (ValueError, KeyError, TypeError, AttributeError, CorruptStoreError)


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


@dataclass(slots=True)
class _Snapshot:
    generation: int
    jobs: list[JobRecord]
    failed: list[JobRecord]
    path: Path
    size: int


class JournalStore:
    """One store on disk, seen from one process.

    It keeps a descriptor on the journal and the byte offset it has applied up to, so catching
    up on what other processes appended reads only the new bytes. A compaction by another process
    replaces the journal file; the old descriptor still reads the old journal to its end, and the
    new journal's header names its generation, so a process that was up to date follows on
    without reloading the snapshot.
    """

    def __init__(self, path: Path, *, max_file_size: int, max_backups: int, fsync: bool) -> None:
        self.path = path
        self.journal_path = path.with_name(path.name + ".journal")
        self.lock_path = path.with_name(path.name + ".lock")
        self.max_file_size = max_file_size
        self.max_backups = max_backups
        self.fsync = fsync
        #: What the last full load found wrong (one message per problem); empty when all was well.
        self.problems: list[str] = []
        self._lock_fd = -1
        self._fd = -1
        self._file_id: tuple[int, int] | None = None
        self._offset = 0
        self._synced = 0
        self._generation = 0
        self._retry_compact_at = 0
        self._record_bytes = 400.0  # average size of a record in the snapshot, measured
        self._stale = False

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
        if not lock_descriptor(self._lock_fd, blocking=False):
            if fcntl is not None:
                # Wait in the kernel: a blocked flock wakes the moment the holder lets go, where
                # filelock's own blocking wait sleeps between tries.
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            else:  # pragma: no cover - Windows
                lock_descriptor(self._lock_fd, blocking=True, poll_interval=0.001)
        try:
            yield
        finally:
            unlock_descriptor(self._lock_fd)

    # -- following the journal -------------------------------------------------------------

    def unchanged(self) -> bool:
        """True if nobody wrote since this process last caught up. Needs no lock: one stat."""
        try:
            st = os.stat(self.journal_path)
        except OSError:
            return False
        same_file = (st.st_dev, st.st_ino) == self._file_id
        return same_file and st.st_size == self._offset and not self._stale

    def catch_up(self, replica: Replica) -> None:
        """Apply what other processes appended since the last call (under the lock)."""
        if self._stale:
            self._load(replica)
            return
        try:
            st = os.stat(self.journal_path)
        except FileNotFoundError:
            self._load(replica)
            return
        if (st.st_dev, st.st_ino) == self._file_id:
            if st.st_size > self._offset:
                self._offset = self._read(replica, self._fd, self._offset, live=True)
            elif st.st_size < self._offset:
                log.error("file queue %s: the journal shrank under us; reloading", self.path)
                self._load(replica)
            return
        # Another process compacted. Its snapshot holds everything in the old journal, which
        # our descriptor still reads (a renamed file stays open): finish it, then follow the new
        # journal if it is the very next generation. Any other jump means a reload.
        old_end = self._read(replica, self._fd, self._offset, live=False)
        try:
            fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            self._load(replica)
            return
        try:
            generation, header_end = _read_header(fd, self.journal_path)
            follows = generation == self._generation + 1 and old_end == os.fstat(self._fd).st_size
        except CorruptStoreError:
            follows = False
        if not follows:
            os.close(fd)
            self._load(replica)
            return
        self._adopt(fd, generation, header_end)
        self._offset = self._read(replica, fd, header_end, live=True)
        self._synced = self._offset

    def _adopt(self, fd: int, generation: int, offset: int) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        st = os.fstat(fd)
        self._fd, self._file_id = fd, (st.st_dev, st.st_ino)
        self._generation, self._offset, self._synced = generation, offset, offset
        self._retry_compact_at = 0

    def _read(self, replica: Replica, fd: int, offset: int, *, live: bool) -> int:
        """Apply the complete lines from ``offset`` to the end; return the offset reached."""
        chunks = []
        while chunk := os.pread(fd, 1 << 22, offset + sum(map(len, chunks))):
            chunks.append(chunk)
        data = b"".join(chunks)
        end = self._replay(replica, data, offset, self.journal_path)
        if end < len(data):
            _warn_torn(self.journal_path, data[end:])
            if live:
                # Under the lock a partial last line can only be a writer that died mid-write,
                # before its call returned: nothing acknowledged is dropped, and the next
                # append must not be glued onto it.
                os.ftruncate(fd, offset + end)
        return offset + end

    def _replay(self, replica: Replica, data: bytes, base: int, source: Path) -> int:
        """Apply each complete line of ``data``; return the length through the last newline."""
        end = data.rfind(b"\n") + 1
        pos = base
        for line in data[:end].split(b"\n")[:-1]:
            try:
                replica.apply(json.loads(line))
            except _LINE_ERRORS as e:
                self._damaged_line(source, pos, line, e)
            pos += len(line) + 1
        return end

    def _damaged_line(self, source: Path, pos: int, line: bytes, error: Exception) -> None:
        self._problem(
            f"file queue {source}: damaged journal line at byte {pos} skipped "
            f"({type(error).__name__}: {error}): {line[:200]!r}"
        )
        # Keep the damaged bytes for a human: the journal itself is archived and later rotated
        # away by compaction, the hard link is not. One link per journal generation.
        keep = source.with_name(f"{source.name}.damaged-g{self._generation}")
        if not keep.exists():
            with contextlib.suppress(OSError):
                _link_or_copy(source, keep)

    # -- writing ---------------------------------------------------------------------------

    def append(self, data: bytes) -> None:
        """Append whole lines at the end of the journal, all or nothing."""
        start = self._offset
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as e:
            # Cut back to where the batch began so no half batch stays behind; reload on the
            # next operation because the replica already holds the batch.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            self._stale = True
            raise DriverError(
                f"file queue {self.journal_path}: cannot append to the journal ({e})"
            ) from e
        self._offset = start + len(data)

    def flush(self) -> None:
        """Make appended lines durable (``fsync: true``). Needs no lock.

        Every line appended before it is on disk when it returns; concurrent operations batched
        in one append share one fsync (group commit).
        """
        if not self.fsync or self._synced >= self._offset:
            return
        offset = self._offset
        try:
            _datasync(self._fd)
        except OSError as e:
            raise DriverError(f"file queue {self.journal_path}: fsync failed ({e})") from e
        self._synced = offset

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
        generation = self._generation + 1 if generation is None else generation
        header = _header(generation)
        jobs, failed = replica.dump()
        tmp = self.path.with_name(self.path.name + ".tmp")
        journal_tmp = self.journal_path.with_name(self.journal_path.name + ".tmp")
        try:
            size = _write_snapshot(tmp, generation, jobs, failed)
            self._record_bytes = size / max(len(jobs) + len(failed), 1)
            _write_file(journal_tmp, header)
            self._rotate()
            os.replace(tmp, self.path)
            os.replace(journal_tmp, self.journal_path)
            _fsync_dir(self.path.parent)
        finally:
            for leftover in (tmp, journal_tmp):
                with contextlib.suppress(OSError):
                    leftover.unlink()
        fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
        self._adopt(fd, generation, len(header))

    def invalidate(self) -> None:
        """Reload everything from disk before the next operation (after an unexpected error)."""
        self._stale = True

    def _rotate(self) -> None:
        if self.max_backups <= 0:
            return
        for base in (self.path, self.journal_path):
            for k in range(self.max_backups - 1, 0, -1):
                older = _numbered(base, k)
                if older.exists():
                    os.replace(older, _numbered(base, k + 1))
            newest = _numbered(base, 1)
            with contextlib.suppress(FileNotFoundError):
                newest.unlink()
            if base.exists():
                _link_or_copy(base, newest)

    # -- loading and recovery --------------------------------------------------------------

    def _load(self, replica: Replica) -> None:
        """Rebuild the replica from disk: snapshot plus journal, or recover from backups."""
        self.problems = []
        self._stale = False
        journals = self._journals()
        snapshot = self._best_snapshot()
        if snapshot is None and not journals and not self.problems:
            replica.reset([], [])
            self._generation = -1
            self.compact(replica, generation=0)  # a new store
            return
        start = snapshot.generation if snapshot else min((g for g, _ in journals), default=0)
        if snapshot is None:
            self._problem(f"file queue {self.path}: no readable snapshot; rebuilt from journals")
        elif not self.journal_path.exists():
            self._problem(
                f"file queue {self.journal_path}: the journal is missing; operations after "
                f"snapshot generation {start} are lost"
            )
        replica.reset(snapshot.jobs if snapshot else [], snapshot.failed if snapshot else [])
        expected, newest, live_end = start, start, -1
        for generation, path in journals:
            if generation < start:
                continue  # already in the snapshot (a crash between two renames of compaction)
            if generation != expected:
                self._problem(
                    f"file queue {self.path}: journals of generations {expected}..{generation - 1}"
                    " are missing; the operations they held are lost"
                )
            self._generation = generation
            data = path.read_bytes()
            _, header_end = _parse_header(data, path)
            end = header_end + self._replay(replica, data[header_end:], header_end, path)
            if end < len(data):
                _warn_torn(path, data[end:])
            if path == self.journal_path:
                live_end = end
            expected, newest = generation + 1, generation
        clean = (
            not self.problems
            and snapshot is not None
            and snapshot.path == self.path
            and bool(journals)
            and journals[-1] == (snapshot.generation, self.journal_path)
        )
        if snapshot is not None and (records := len(snapshot.jobs) + len(snapshot.failed)):
            self._record_bytes = snapshot.size / records
        if clean:
            fd = os.open(self.journal_path, os.O_RDWR | os.O_APPEND)
            if os.fstat(fd).st_size > live_end:
                os.ftruncate(fd, live_end)  # the torn last line warned about above
            self._adopt(fd, start, live_end)
            return
        # Skip a generation: a process still running on the old files must reload rather than
        # follow on, since what was recovered may differ from what it holds.
        self.compact(replica, generation=max(newest, start) + 2)
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

    def _journals(self) -> list[tuple[int, Path]]:
        """Readable journals as (generation, path), oldest first; the live one wins a tie."""
        found: dict[int, Path] = {}
        candidates = [self.journal_path] + [
            _numbered(self.journal_path, k) for k in range(1, self.max_backups + 1)
        ]
        for path in candidates:
            try:
                with path.open("rb") as f:
                    generation, _ = _parse_header(f.read(4096), path)
            except FileNotFoundError:
                continue
            except (OSError, CorruptStoreError) as e:
                self._problem(f"{e}; set aside as {_set_aside(path)}")
                continue
            found.setdefault(generation, path)
        return sorted(found.items())

    def _best_snapshot(self) -> _Snapshot | None:
        """The newest readable snapshot; damaged ones are renamed aside, never overwritten."""
        candidates = [self.path] + [_numbered(self.path, k) for k in range(1, self.max_backups + 1)]
        for path in candidates:
            if not path.exists():
                if path == self.path and any(p.exists() for p in candidates[1:]):
                    self._problem(f"file queue {path}: the snapshot is missing")
                continue
            try:
                snapshot, damaged = _read_snapshot(path)
            except CorruptStoreError as e:
                self._problem(f"{e}; set aside as {_set_aside(path)}")
                continue
            if damaged:
                for message in damaged:
                    self._problem(message)
                self._problem(f"file queue {path}: set aside as {_set_aside(path)}")
            return snapshot
        return None


@dataclass(slots=True, eq=False)
class _IOCall:
    """One operation queued for the I/O thread, and its outcome."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    locked: bool = True
    #: Whether ``fsync: true`` must put its line on disk before it returns.
    durable: bool = True
    #: Answers ``empty`` without taking the lock when it returns True.
    skip: Callable[[], bool] | None = None
    empty: Any = None
    result: Any = None
    error: BaseException | None = None

    def run(self) -> None:
        """Call ``fn`` and keep what it returned or raised."""
        try:
            self.result = self.fn(*self.args)
        except Exception as e:
            self.error = e


class IOThread:
    """The one thread that touches the store's files and replica.

    Calls queue up while it works; it takes them all, holds the lock once, catches up once,
    appends all their lines in one write and fsyncs once (group commit), then answers each.
    """

    def __init__(self, store: JournalStore, replica: Replica) -> None:
        self.store = store
        self.replica = replica
        self.lines: list[bytes] = []
        # Held by the thread for each batch.
        self._mutex = threading.Lock()
        self._queue: queue.SimpleQueue[_IOCall | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name=f"queuekit-file {store.path}", daemon=True
        )
        self._thread.start()

    async def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        locked: bool = True,
        durable: bool = True,
        skip: Callable[[], bool] | None = None,
        empty: Any = None,
    ) -> Any:
        """Run ``fn(*args)`` on the thread and return its result (or raise its error).

        ``locked`` runs it under the lock after catching up; ``durable`` makes ``fsync: true``
        sync its lines before answering; ``skip`` (run on the thread first) answers ``empty``
        without the lock when it returns True.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_IOCall(fn, args, loop, future, locked, durable, skip, empty))
        return await future

    def stop(self) -> None:
        """Let the thread finish the calls already queued, then end."""
        self._queue.put(None)

    async def join(self, timeout: float) -> None:
        """Wait (off the loop) for the thread to end."""
        await asyncio.to_thread(self._thread.join, timeout)

    def _run(self) -> None:
        while (call := self._queue.get()) is not None:
            batch = [call]
            stopping = False
            while len(batch) < _MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batch.append(more)
            self._run_batch(batch)
            if stopping:
                return

    def _run_batch(self, batch: list[_IOCall]) -> None:
        with self._mutex:
            locked = []
            for call in batch:
                if not call.locked:
                    call.run()
                elif call.skip is not None and call.skip():
                    call.result = call.empty
                else:
                    locked.append(call)
            if locked:
                self._run_locked(locked)
        for call in batch:
            # A closed loop raises RuntimeError: nobody is waiting for the answer any more.
            with contextlib.suppress(RuntimeError):
                call.loop.call_soon_threadsafe(_settle, call.future, call.result, call.error)

    def _run_locked(self, calls: list[_IOCall]) -> None:
        store = self.store
        try:
            with store.locked():
                store.catch_up(self.replica)
                for call in calls:
                    call.run()
                wrote = bool(self.lines)
                if wrote:
                    store.append(b"".join(self.lines))
                store.maybe_compact(self.replica)
            # Outside the lock: other processes go on while this one waits for the disk.
            if wrote and any(call.durable for call in calls):
                store.flush()
        except Exception as e:
            store.invalidate()
            error = e
            if not isinstance(e, DriverError):
                error = DriverError(f"file queue {store.path}: {type(e).__name__}: {e}")
                error.__cause__ = e
            for call in calls:
                call.result, call.error = None, error
        finally:
            self.lines.clear()


def wake(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is done (for ``loop.call_soon_threadsafe``)."""
    _settle(future, None, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


# -- file formats ----------------------------------------------------------------------------


def _header(generation: int) -> bytes:
    head = {"op": "begin", "format": JOURNAL_FORMAT, "generation": generation, "at": time.time()}
    return json.dumps(head).encode() + b"\n"


def _parse_header(data: bytes, path: Path) -> tuple[int, int]:
    """(generation, length of the header line) of a journal's first bytes."""
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


def _read_header(fd: int, path: Path) -> tuple[int, int]:
    return _parse_header(os.pread(fd, 4096, 0), path)


def _read_snapshot(path: Path) -> tuple[_Snapshot, list[str]]:
    """Parse a snapshot; returns it with one message per record that had to be skipped.

    Raises ``CorruptStoreError`` naming the file when it cannot be used at all.
    """
    try:
        raw = path.read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError) as e:
        raise CorruptStoreError(f"file queue {path}: the snapshot is not valid JSON ({e})") from e
    # A hand-written {"jobs": [...]} is accepted: format and generation default.
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
    return _Snapshot(generation, lists["jobs"], lists["failed"], path, len(raw)), damaged


def _write_snapshot(
    path: Path, generation: int, jobs: list[JobRecord], failed: list[JobRecord]
) -> int:
    """Write one record per line, so a person can read and grep it; returns the size."""
    head = {"format": SNAPSHOT_FORMAT, "generation": generation, "written_at": time.time()}
    with path.open("w", encoding="utf-8") as f:
        f.write(json.dumps(head)[:-1] + ',\n"jobs": [\n')
        encode = _COMPACT.encode  # one encoder for all records: compaction is a hot loop
        f.write(",\n".join(encode(r.to_json()) for r in jobs))
        f.write('\n],\n"failed": [\n')
        f.write(",\n".join(encode(r.to_json()) for r in failed))
        f.write("\n]}\n")
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _numbered(path: Path, k: int) -> Path:
    return path.with_name(f"{path.name}.{k}")


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(src, dst)


def _set_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    os.replace(path, target)
    return target


def _warn_torn(path: Path, tail: bytes) -> None:
    log.warning(
        "file queue %s: skipped a torn last line (%d bytes; a write cut short by a crash, "
        "never acknowledged): %r",
        path,
        len(tail),
        tail[:200],
    )


def _fsync_dir(path: Path) -> None:
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


_datasync = getattr(os, "fdatasync", os.fsync)
