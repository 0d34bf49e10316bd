"""``SQLiteDriver``: the database driver on a local SQLite file (stdlib ``sqlite3``).

The embedded default: no server, safe for many worker processes on one machine. Every statement
runs on one dedicated thread that owns the driver's connection, so the event loop never blocks
on disk or on SQLite's write lock. The file is in WAL mode: readers never wait for the writer,
and a reservation takes the write lock up front (``BEGIN IMMEDIATE``) so two processes can never
both read the same job as free.

URL: ``sqlite:///relative/path/jobs.db`` or ``sqlite:////absolute/path/jobs.db``. The query string
may set ``synchronous`` (``normal``, the default, survives a crash of the process; ``full`` also
survives a power cut, at a cost per commit).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from ...clock import now
from ...errors import ConfigError, CorruptStoreError, DriverError, DuplicateJobError
from ...record import JobRecord
from ..base import Capability, QueueDriver, QueueStats
from .common import (
    ChangeSignal,
    decode_failed,
    empty_counts,
    fence_of,
    reservation_order,
    select_stats,
)
from .options import DatabaseOptions
from .schema import SCHEMA_VERSION, record_from_row, record_to_row, row_source
from .sqlite_statements import SQLiteStatements

__all__ = ["SQLiteDriver"]

log = logging.getLogger("queuekit.drivers.sqlite")

T = TypeVar("T")

_SYNCHRONOUS = ("off", "normal", "full", "extra")


def _parse_url(url: str) -> tuple[str, str]:
    """``(path, synchronous)`` from ``sqlite:///path?synchronous=normal``."""
    parts = urlsplit(url)
    if parts.netloc:
        raise ConfigError(
            f"queue.database.url: a SQLite URL has no host ({url!r}); write "
            "'sqlite:///relative/jobs.db' or 'sqlite:////absolute/jobs.db'"
        )
    path = unquote(parts.path[1:] if parts.path.startswith("/") else parts.path)
    if not path or path == ":memory:":
        raise ConfigError(
            f"queue.database.url: expected a database file path, got {url!r} "
            "(an in-memory database would lose every job; use the memory driver for that)"
        )
    query = parse_qs(parts.query)
    unknown = set(query) - {"synchronous"}
    if unknown:
        raise ConfigError(
            f"queue.database.url: unknown SQLite option(s) {', '.join(sorted(unknown))}; "
            "known: synchronous"
        )
    synchronous = query.get("synchronous", ["normal"])[-1].lower()
    if synchronous not in _SYNCHRONOUS:
        raise ConfigError(
            f"queue.database.url: synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
            f"got {synchronous!r}"
        )
    return path, synchronous


class SQLiteDriver(QueueDriver):
    """The ``database`` driver for ``sqlite:///...`` URLs.

    Example::

        driver = SQLiteDriver({"url": "sqlite:///storage/queue/jobs.db", "retry_after": 60})
        await driver.connect()

    ``push(record, connection=conn)`` writes with the caller's own open ``sqlite3`` connection to
    the same file, inside the caller's transaction: the job exists if and only if it commits.
    """

    name = "database"
    capabilities = (
        Capability.PRIORITY
        | Capability.DELAY
        | Capability.ATOMIC_BATCH
        | Capability.PERSISTENT
        | Capability.TRANSACTIONAL
        | Capability.UNIQUE
    )

    def __init__(self, options: dict[str, Any] | DatabaseOptions) -> None:
        self.options = DatabaseOptions.parse(options)
        self.path, self._synchronous = _parse_url(self.options.url)
        self.default_lease = self.options.retry_after
        self.sql = SQLiteStatements(self.options.table, self.options.failed_table)
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._real_path: str | None = None
        self._changed = ChangeSignal()

    # -- the connection thread -------------------------------------------------------------

    async def connect(self) -> None:
        """Open the file (creating folders, tables and indexes) and record the schema version."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="queuekit-sqlite")
        try:
            await self._call(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        """Close the connection and stop its thread."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(executor, self._close_conn)
        finally:
            executor.shutdown(wait=True)

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the connection thread; SQLite errors become ``DriverError``."""
        if self._executor is None:
            raise DriverError(f"SQLite queue {self.path!r}: the driver is not connected")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as e:
            raise self._wrap(e) from e

    def _wrap(self, error: sqlite3.Error) -> DriverError:
        text = f"SQLite queue {self.path!r}: {type(error).__name__}: {error}"
        if isinstance(error, sqlite3.DatabaseError) and "not a database" in str(error):
            return CorruptStoreError(f"{text} (the file is damaged; it was left untouched)")
        return DriverError(text)

    def _open(self) -> None:
        folder = os.path.dirname(self.path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self.options.connect_timeout,
            isolation_level=None,  # we open every transaction ourselves
            check_same_thread=True,
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous.upper()}")
            self._create_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        self._real_path = os.path.realpath(self.path)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        # IMMEDIATE: processes starting together create the tables one after the other.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in self.sql.create:
                conn.execute(statement)
            for table in (self.options.table, self.options.failed_table):
                row = conn.execute(self.sql.schema_version, (table,)).fetchone()
                if row is not None and row[0] > SCHEMA_VERSION:
                    raise DriverError(
                        f"SQLite queue {self.path!r}: table {table!r} has schema version "
                        f"{row[0]}, newer than this release reads ({SCHEMA_VERSION}); upgrade "
                        "queuekit"
                    )
                conn.execute(self.sql.record_version, (table, SCHEMA_VERSION, now()))
            conn.execute("COMMIT")
        except BaseException:
            conn.rollback()
            raise

    def _transaction(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` in one write transaction on the connection thread."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = body(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.execute("COMMIT")
        return result

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        connection = options.get("connection")
        if connection is not None:
            return self._push_in_caller_transaction(connection, [record])
        stored = await self._call(self._insert_one, record)
        if stored:
            self._changed.notify()
        return stored

    def _insert_one(self, record: JobRecord, conn: sqlite3.Connection | None = None) -> bool:
        """Insert one record; False when its unique key is already pending or running."""
        conn = conn or self._conn
        assert conn is not None
        try:
            conn.execute(self.sql.insert, record_to_row(record))
        except sqlite3.IntegrityError as e:
            if record.unique_key is not None and "unique_key" in str(e):
                return False
            raise
        return True

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        if not records:
            return
        connection = options.get("connection")
        if connection is not None:
            self._push_in_caller_transaction(connection, records)
            return
        await self._call(self._transaction, lambda conn: self._insert_all(conn, records))
        self._changed.notify()

    def _insert_all(self, conn: sqlite3.Connection, records: Sequence[JobRecord]) -> None:
        try:
            conn.executemany(self.sql.insert, [record_to_row(r) for r in records])
        except sqlite3.IntegrityError as e:
            if "unique_key" in str(e):
                raise DuplicateJobError(
                    f"table {self.options.table!r}: the batch holds a unique job whose key is "
                    "already pending (nothing was stored)"
                ) from e
            raise

    def _push_in_caller_transaction(self, conn: Any, records: Sequence[JobRecord]) -> bool:
        """Insert with the caller's connection, inside the transaction it has open.

        Runs on the caller's thread: a ``sqlite3`` connection belongs to the thread that made it.
        A savepoint makes a refused batch leave the caller's transaction as it was.
        """
        if not isinstance(conn, sqlite3.Connection):
            raise DriverError(
                f"SQLite queue {self.path!r}: connection= must be a sqlite3.Connection to the "
                f"same file, got {type(conn).__name__}"
            )
        try:
            self._check_same_file(conn)
            _begin_as_python_would(conn)
            conn.execute("SAVEPOINT queuekit_push")
            try:
                if len(records) == 1:
                    stored = self._insert_one(records[0], conn)
                else:
                    self._insert_all(conn, records)
                    stored = True
            except BaseException:
                conn.execute("ROLLBACK TO queuekit_push")
                raise
            finally:
                conn.execute("RELEASE queuekit_push")
            return stored
        except sqlite3.ProgrammingError as e:
            raise DriverError(
                f"SQLite queue {self.path!r}: cannot use the caller's connection ({e}); dispatch "
                "from the thread that opened it (await manager.dispatch), or open it with "
                "check_same_thread=False to use dispatch_sync"
            ) from e
        except sqlite3.Error as e:
            raise self._wrap(e) from e

    def _check_same_file(self, conn: sqlite3.Connection) -> None:
        files = {row[1]: row[2] for row in conn.execute("PRAGMA database_list")}
        main = files.get("main") or ""
        if self._real_path is None:
            raise DriverError(f"SQLite queue {self.path!r}: the driver is not connected")
        if not main or os.path.realpath(main) != self._real_path:
            raise DriverError(
                f"SQLite queue {self.path!r}: the connection passed as connection= is open on "
                f"{main or 'an in-memory database'!r}, not on the queue's file"
            )

    # -- reserving -------------------------------------------------------------------------

    async def reserve(
        self, queues: Sequence[str] | None, *, lease: float, wait: float = 0.0
    ) -> JobRecord | None:
        records = await self.reserve_many(queues, lease=lease, limit=1, wait=wait)
        return records[0] if records else None

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        names = None if queues is None else tuple(queues)
        while True:
            seen = self._changed.seen
            records = await self._call(self._reserve_sync, names, lease, max(limit, 1))
            if records:
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            await self._changed.wait(seen, min(remaining, self.options.poll_interval))

    def _reserve_sync(
        self, queues: tuple[str, ...] | None, lease: float, limit: int
    ) -> list[JobRecord]:
        records, corrupt = self._transaction(
            lambda conn: self._lease_rows(conn, queues, lease, limit)
        )
        if corrupt:
            # Raised after the commit, so the unreadable rows are already safe in the failed
            # table and the next reservation hands out the readable jobs.
            raise CorruptStoreError(
                f"{'; '.join(corrupt)}; moved to table {self.options.failed_table!r} with the "
                "error, the other jobs are untouched"
            )
        return records

    def _lease_rows(
        self, conn: sqlite3.Connection, queues: tuple[str, ...] | None, lease: float, limit: int
    ) -> tuple[list[JobRecord], list[str]]:
        at = now()
        params: dict[str, Any] = {"now": at, "until": at + lease, "limit": limit}
        if queues is None:
            rows = conn.execute(self.sql.take_any, params).fetchall()
            rows.sort(key=reservation_order)
        else:
            rows = []
            for queue in queues:  # a list of queues is tried in order
                params.update(queue=queue, limit=limit - len(rows))
                taken = conn.execute(self.sql.take_queue, params).fetchall()
                rows.extend(sorted(taken, key=reservation_order))
                if len(rows) >= limit:
                    break
        records: list[JobRecord] = []
        corrupt: list[tuple[int, CorruptStoreError]] = []
        for row in rows:
            try:
                records.append(record_from_row(row[1:], self.options.table))
            except CorruptStoreError as e:
                corrupt.append((row[0], e))
        if not corrupt:
            return records, []
        self._quarantine(conn, corrupt, [row[0] for row in rows])
        return [], [str(e) for _, e in corrupt]

    def _quarantine(
        self,
        conn: sqlite3.Connection,
        corrupt: list[tuple[int, CorruptStoreError]],
        leased: list[int],
    ) -> None:
        """Move unreadable rows to the failed table, kept byte for byte, with the error.

        The readable rows leased alongside them are handed back untouched, so the error costs
        them nothing: the next reservation returns them.
        """
        bad = {seq for seq, _ in corrupt}
        for seq in leased:
            if seq not in bad:
                conn.execute(self.sql.unlease, (seq,))
        at = now()
        for seq, error in corrupt:
            conn.execute(self.sql.quarantine, (None, None, str(error), at, seq))
            conn.execute(self.sql.delete_seq, (seq,))

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        until = now() + lease
        if not await self._call(self._execute_count, self.sql.extend, (until, *fence)):
            return False
        record.reserved_until = until
        return True

    def _execute_count(self, statement: str, params: Sequence[Any]) -> int:
        conn = self._conn
        assert conn is not None
        return conn.execute(statement, params).rowcount

    async def complete(self, record: JobRecord) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        return (await self._call(self._delete_fenced, [fence]))[0]

    def _delete_fenced(self, fences: Sequence[tuple[int, str] | None]) -> list[bool]:
        conn = self._conn
        assert conn is not None
        if len(fences) == 1:  # one statement commits on its own: no BEGIN/COMMIT round
            fence = fences[0]
            return [fence is not None and conn.execute(self.sql.complete, fence).rowcount > 0]
        return self._transaction(
            lambda c: [
                f is not None and c.execute(self.sql.complete, f).rowcount > 0 for f in fences
            ]
        )

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Delete several finished jobs in one transaction; one flag per record."""
        if not records:
            return []
        return await self._call(self._delete_fenced, [fence_of(r) for r in records])

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        params = (record.attempts, error, now() + delay, *fence)
        released = await self._call(self._execute_count, self.sql.release, params) > 0
        if released:
            self._changed.notify()
        return released

    async def fail(self, record: JobRecord, error: str) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False

        def body(conn: sqlite3.Connection) -> bool:
            if conn.execute(self.sql.copy_to_failed, (None, None, error, now(), *fence)).rowcount:
                conn.execute(self.sql.complete, fence)
                return True
            return False

        return await self._call(self._transaction, body)

    # -- inspecting and managing -----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        def read() -> QueueStats:
            conn = self._conn
            assert conn is not None
            at = now()
            out: QueueStats = {}
            for queue, pending, delayed, reserved in conn.execute(self.sql.stats, (at, at)):
                out[queue] = {
                    "pending": pending or 0,
                    "delayed": delayed or 0,
                    "reserved": reserved or 0,
                    "failed": 0,
                }
            for queue, count in conn.execute(self.sql.failed_stats):
                out.setdefault(queue, empty_counts())["failed"] = count
            return out

        return select_stats(await self._call(read), queues)

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        def read() -> list[JobRecord]:
            conn = self._conn
            assert conn is not None
            if queue is None:
                rows = conn.execute(self.sql.failed_list, (limit,)).fetchall()
            else:
                rows = conn.execute(self.sql.failed_list_queue, (queue, limit)).fetchall()
            return decode_failed(rows, self.options.failed_table)

        return await self._call(read)

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        def body(conn: sqlite3.Connection) -> int:
            moved = 0
            at = now()
            for seq in self._failed_seqs(conn, ids):
                try:
                    conn.execute("SAVEPOINT queuekit_retry")
                    conn.execute(self.sql.retry, (at, seq))
                except sqlite3.IntegrityError as e:
                    # Its unique key (or id) is pending again: it stays failed, visibly.
                    conn.execute("ROLLBACK TO queuekit_retry")
                    conn.execute("RELEASE queuekit_retry")
                    log.warning(
                        "queuekit: %s was not retried: %s",
                        row_source(self.options.failed_table, seq),
                        e,
                    )
                    continue
                conn.execute("RELEASE queuekit_retry")
                conn.execute(self.sql.forget_seq, (seq,))
                moved += 1
            return moved

        moved = await self._call(self._transaction, body)
        if moved:
            self._changed.notify()
        return moved

    def _failed_seqs(self, conn: sqlite3.Connection, ids: Sequence[str] | None) -> list[int]:
        if ids is None:
            return [row[0] for row in conn.execute(self.sql.failed_seqs)]
        return [row[0] for i in ids for row in conn.execute(self.sql.failed_seqs_of, (i,))]

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        def body(conn: sqlite3.Connection) -> int:
            if ids is None:
                return conn.execute(self.sql.forget_all).rowcount
            return sum(conn.execute(self.sql.forget_id, (i,)).rowcount for i in ids)

        return await self._call(self._transaction, body)

    async def purge(self, queue: str) -> int:
        return await self._call(self._execute_count, self.sql.purge, (queue,))


def _begin_as_python_would(conn: sqlite3.Connection) -> None:
    """Open the transaction ``sqlite3`` would open implicitly before an INSERT.

    Our SAVEPOINT comes first, and outside a transaction its RELEASE would commit at once; this
    keeps the job inside the caller's transaction, to commit or roll back with it.
    """
    if conn.in_transaction:
        return
    autocommit = getattr(conn, "autocommit", None)  # Python 3.12+
    if autocommit is True or (autocommit is not False and conn.isolation_level is None):
        return  # the caller chose autocommit: each statement is its own transaction
    conn.execute(f"BEGIN {conn.isolation_level or ''}".rstrip())
