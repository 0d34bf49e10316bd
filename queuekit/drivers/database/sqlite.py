"""``SQLiteDriver``: the database driver on a local SQLite file (stdlib ``sqlite3``).

The embedded default: no server, safe for many worker processes on one machine. Every statement
runs on one dedicated thread that owns the driver's connection, so the event loop never blocks
on disk or on SQLite's write lock. The file is in WAL mode: readers never wait for the writer,
and a reservation takes the write lock up front (``BEGIN IMMEDIATE``) so two processes can never
both read the same job as free.

Group commit: the thread takes every write queued while it was busy and runs them in one
transaction, each in a savepoint of its own, and answers them together after the ``COMMIT``. A
worker's acknowledgement of job N and its reservation of job N+1, or many concurrent dispatches,
then cost one commit and one wake-up of the event loop.

URL: ``sqlite:///relative/path/jobs.db`` or ``sqlite:////absolute/path/jobs.db``. The query string
may set ``synchronous`` (``normal``, the default, survives a crash of the process; ``full`` also
survives a power cut, at a cost per commit).

Its parts live beside it: the statements in ``sqlite_statements``, the connection thread in
``sqlite_thread``, opening and the caller's connection in ``sqlite_connection``, stats and
failed-job management in ``sqlite_admin``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ...clock import now
from ...errors import CorruptStoreError, DriverError, DuplicateJobError
from ...record import JobRecord
from ..base import QueueDriver
from .common import (
    SQL_CAPABILITIES,
    ChangeSignal,
    decode_leased,
    fence_of,
    lease_or_wait,
    reservation_order,
)
from .options import DatabaseOptions
from .schema import record_to_row
from .sqlite_admin import SQLiteAdmin
from .sqlite_connection import (
    begin_as_python_would,
    changed_rows,
    check_same_file,
    close_connection,
    create_schema,
    open_connection,
    parse_url,
)
from .sqlite_statements import SQLiteStatements
from .sqlite_thread import CLOSE, OPEN, STATEMENT, WRITE, ConnectionThread

__all__ = ["SQLiteDriver"]

T = TypeVar("T")


class SQLiteDriver(SQLiteAdmin, QueueDriver):
    """The ``database`` driver for ``sqlite:///...`` URLs.

    Example::

        driver = SQLiteDriver({"url": "sqlite:///storage/queue/jobs.db", "retry_after": 60})
        await driver.connect()

    ``push(record, connection=conn)`` writes with the caller's own open ``sqlite3`` connection to
    the same file, inside the caller's transaction: the job exists if and only if it commits.
    """

    name = "database"
    capabilities = SQL_CAPABILITIES

    def __init__(self, options: dict[str, Any] | DatabaseOptions) -> None:
        self.options = DatabaseOptions.parse(options)
        self.path, self._synchronous = parse_url(self.options.url)
        self.default_lease = self.options.retry_after
        self.sql = SQLiteStatements(self.options.table, self.options.failed_table)
        self._thread: ConnectionThread | None = None
        self._real_path: str | None = None
        self._changed = ChangeSignal()

    # -- the connection thread -------------------------------------------------------------

    async def connect(self) -> None:
        """Open the file (creating folders, tables and indexes) and record the schema version."""
        if self._thread is not None:
            return
        thread = self._thread = ConnectionThread("queuekit-sqlite", f"SQLite queue {self.path!r}")
        try:
            await self._call(OPEN, self._open)
        except BaseException:
            self._thread = None
            thread.submit(CLOSE, close_connection, ())
            raise

    async def close(self) -> None:
        """Close the connection and stop its thread (operations already queued run first)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        # The thread ends right after running the close, whatever its outcome; waiting for it
        # only once it answered keeps a cancelled close from blocking the event loop.
        await thread.submit(CLOSE, close_connection, ())
        thread.join()

    async def _call(self, kind: int, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on the connection thread; SQLite errors become ``DriverError``.

        ``kind`` says how it meets the transaction (``READ``, ``WRITE``, ``STATEMENT``).
        """
        thread = self._thread
        if thread is None:
            raise DriverError(f"SQLite queue {self.path!r}: the driver is not connected")
        try:
            return await thread.submit(kind, fn, args)
        except sqlite3.Error as e:
            raise self._wrap(e) from e

    def _wrap(self, error: sqlite3.Error) -> DriverError:
        text = f"SQLite queue {self.path!r}: {type(error).__name__}: {error}"
        if isinstance(error, sqlite3.DatabaseError) and "not a database" in str(error):
            return CorruptStoreError(f"{text} (the file is damaged; it was left untouched)")
        return DriverError(text)

    def _open(self, _: None) -> sqlite3.Connection:
        conn = open_connection(self.path, self._synchronous, self.options.connect_timeout)
        try:
            create_schema(
                conn, self.sql, (self.options.table, self.options.failed_table), self.path
            )
        except BaseException:
            conn.close()
            raise
        self._real_path = os.path.realpath(self.path)
        return conn

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        connection = options.get("connection")
        if connection is not None:
            return self._push_in_caller_transaction(connection, [record])
        stored = await self._call(STATEMENT, self._insert_one, record)
        if stored:
            self._changed.notify()
        return stored

    def _insert_one(self, conn: sqlite3.Connection, record: JobRecord) -> bool:
        """Insert one record; False when its unique key is already pending or running."""
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
        await self._call(WRITE, self._insert_all, records)
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
            check_same_file(conn, self.path, self._real_path)
            begin_as_python_would(conn)
            conn.execute("SAVEPOINT queuekit_push")
            try:
                if len(records) == 1:
                    stored = self._insert_one(conn, records[0])
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

    # -- reserving -------------------------------------------------------------------------

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        names = None if queues is None else tuple(queues)
        return await lease_or_wait(
            lambda: self._call(WRITE, self._lease_rows, names, lease, max(limit, 1)),
            self._changed,
            wait=wait,
            poll_interval=self.options.poll_interval,
            failed_table=self.options.failed_table,
        )

    def _lease_rows(
        self,
        conn: sqlite3.Connection,
        queues: tuple[str, ...] | None,
        lease: float,
        limit: int,
        *,
        quarantine: bool = True,
    ) -> tuple[list[JobRecord], list[str]]:
        """Lease up to ``limit`` due rows; ``(records, errors of the unreadable rows)``.

        Runs in a ``BEGIN IMMEDIATE`` transaction (a ``WRITE`` operation): no other connection
        can read the same rows as free in between. When a row is unreadable, no record comes
        back and every row is handed back; the unreadable ones are first moved to the failed
        table unless ``quarantine`` is False.
        """
        at = now()
        params: dict[str, Any] = {"now": at, "until": at + lease, "limit": limit}
        sql = self.sql
        if queues is None:
            statement = sql.take_one_any if limit == 1 else sql.take_any
            rows = _in_order(conn.execute(statement, params).fetchall())
        else:
            rows = []
            for queue_name in queues:  # a list of queues is tried in order
                params["queue"] = queue_name
                params["limit"] = wanted = limit - len(rows)
                statement = sql.take_one_queue if wanted == 1 else sql.take_queue
                rows += _in_order(conn.execute(statement, params).fetchall())
                if len(rows) >= limit:
                    break
        records, corrupt = decode_leased(rows, self.options.table)
        if not corrupt:
            return records, []
        if quarantine:
            self._quarantine(conn, corrupt, [row[0] for row in rows])
        else:
            for row in rows:
                conn.execute(self.sql.unlease, (row[0],))
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
            conn.execute(self.sql.quarantine, (str(error), at, seq))
            conn.execute(self.sql.delete_seq, (seq,))

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        until = now() + lease
        if not await self._call(STATEMENT, changed_rows, self.sql.extend, (until, *fence)):
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        return await self._call(STATEMENT, changed_rows, self.sql.complete, fence) > 0

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Delete several finished jobs in one transaction; one flag per record."""
        if not records:
            return []
        return await self._call(WRITE, self._delete_fenced, [fence_of(r) for r in records])

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """Delete a finished job and lease the next ones in one write transaction.

        A worker taking one job at a time then pays one commit per job instead of two. When
        nothing is due, the deletion is committed first and the wait is ``reserve_many``'s.
        """
        if limit <= 0:
            return await self.complete(record), []
        names = None if queues is None else tuple(queues)
        completed, records = await self._call(
            WRITE, self._delete_and_lease, fence_of(record), names, lease, limit
        )
        if records or wait <= 0:
            return completed, records
        return completed, await self.reserve_many(queues, lease=lease, limit=limit, wait=wait)

    def _delete_and_lease(
        self,
        conn: sqlite3.Connection,
        fence: tuple[int, str] | None,
        queues: tuple[str, ...] | None,
        lease: float,
        limit: int,
    ) -> tuple[bool, list[JobRecord]]:
        completed = fence is not None and conn.execute(self.sql.complete, fence).rowcount > 0
        records, corrupt = self._lease_rows(conn, queues, lease, limit, quarantine=False)
        # Unreadable rows were handed back untouched: the next reserve() moves them to the
        # failed table and raises, where the worker reports it, instead of this call raising
        # and leaving the caller unsure whether its job was completed.
        return completed, [] if corrupt else records

    def _delete_fenced(
        self, conn: sqlite3.Connection, fences: Sequence[tuple[int, str] | None]
    ) -> list[bool]:
        statement = self.sql.complete
        return [f is not None and conn.execute(statement, f).rowcount > 0 for f in fences]

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        params = (record.attempts, error, now() + delay, *fence)
        released = await self._call(STATEMENT, changed_rows, self.sql.release, params) > 0
        if released:
            self._changed.notify()
        return released

    async def fail(self, record: JobRecord, error: str) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        return await self._call(WRITE, self._move_to_failed, fence, error)

    def _move_to_failed(self, conn: sqlite3.Connection, fence: tuple[int, str], error: str) -> bool:
        if conn.execute(self.sql.copy_to_failed, (error, now(), *fence)).rowcount:
            conn.execute(self.sql.complete, fence)
            return True
        return False


def _in_order(rows: list[Any]) -> list[Any]:
    """Leased rows in reservation order: ``RETURNING`` hands them back in none."""
    if len(rows) > 1:
        rows.sort(key=reservation_order)
    return rows
