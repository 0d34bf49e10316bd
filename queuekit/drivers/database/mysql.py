"""``MySQLDriver``: the database driver on MySQL 8 or MariaDB 10.6+ (``aiomysql``, pooled).

A reservation locks the first due rows with ``FOR UPDATE SKIP LOCKED`` and leases them in the
same transaction, so workers in any number of processes never take the same job and never wait
for each other. Install with ``pip install 'queuekit[mysql]'``.

URL: ``mysql://user:password@host:3306/database`` (``mariadb://`` is the same). The tables are
created in that database.

Its parts live beside it: the statements in ``mysql_statements``, the pool and transactions in
``mysql_connection``, stats and failed-job management (and ``drop_tables``) in ``mysql_admin``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import aiomysql

from ...clock import now
from ...errors import DriverError, DuplicateJobError
from ...record import JobRecord
from ..base import QueueDriver
from .common import (
    SQL_CAPABILITIES,
    ChangeSignal,
    decode_leased,
    fence_of,
    lease_or_wait,
)
from .mysql_admin import MySQLAdmin, drop_tables
from .mysql_connection import (
    DUPLICATE_KEY,
    Cursor,
    MySQLPool,
    TransactionCursor,
    connect_kwargs,
    error_code,
    queue_label,
)
from .mysql_statements import MySQLStatements
from .options import DatabaseOptions
from .schema import SCHEMA_VERSION, record_to_row

__all__ = ["MySQLDriver", "drop_tables"]


class MySQLDriver(MySQLAdmin, QueueDriver):
    """The ``database`` driver for ``mysql://`` and ``mariadb://`` URLs.

    Example::

        driver = MySQLDriver({"url": "mysql://app@127.0.0.1/app", "retry_after": 60})
        await driver.connect()

    ``push(record, connection=conn)`` writes with the caller's own ``aiomysql`` connection,
    inside the transaction it has begun: the job exists if and only if that transaction commits.
    """

    name = "database"
    capabilities = SQL_CAPABILITIES

    def __init__(self, options: dict[str, Any] | DatabaseOptions) -> None:
        self.options = DatabaseOptions.parse(options)
        self._connect_kwargs = connect_kwargs(self.options)
        self.database: str = self._connect_kwargs["db"]
        self.default_lease = self.options.retry_after
        self.sql = MySQLStatements(self.database, self.options.table, self.options.failed_table)
        self._where = queue_label(self._connect_kwargs, self.options.table)
        self._db = MySQLPool(self._connect_kwargs, self._where)
        self._changed = ChangeSignal()

    # -- connections -----------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool, create the tables and indexes, and record the schema version."""
        if not await self._db.open(self.options.pool_size):
            return
        try:
            await self._create_schema()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every pooled connection."""
        await self._db.close()

    async def _create_schema(self) -> None:
        async def body(cur: aiomysql.Cursor) -> None:
            names = [name for name, _ in self.sql.create]
            await cur.execute(self.sql.existing_tables, (self.database, *names))
            existing = {row[0] for row in await cur.fetchall()}
            for name, statement in self.sql.create:
                if name not in existing:
                    await cur.execute(statement)
            for table in (self.options.table, self.options.failed_table):
                await cur.execute(self.sql.schema_version, (table,))
                row = await cur.fetchone()
                if row is not None and row[0] > SCHEMA_VERSION:
                    raise DriverError(
                        f"{self._where}: table {table!r} has schema version {row[0]}, newer "
                        f"than this release reads ({SCHEMA_VERSION}); upgrade queuekit"
                    )
                await cur.execute(self.sql.record_version, (table, SCHEMA_VERSION, now()))

        await self._db.autocommit(body)

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        connection = options.get("connection")
        if connection is not None:
            return await self._push_in_caller_transaction(connection, [record])
        row = record_to_row(record)

        async def body(cur: aiomysql.Cursor) -> bool:
            return await self._insert_one(cur, record, row)

        stored = await self._db.autocommit(body)
        if stored:
            self._changed.notify()
        return stored

    async def _insert_one(self, cur: aiomysql.Cursor, record: JobRecord, row: Any) -> bool:
        """Insert one row; False when its unique key is already pending or running."""
        try:
            await cur.execute(self.sql.insert, row)
        except aiomysql.IntegrityError as e:
            if record.unique_key is not None and error_code(e) == DUPLICATE_KEY:
                return False
            raise self._db.wrap(e) from e
        return True

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        if not records:
            return
        rows = [record_to_row(r) for r in records]  # encode all before writing any
        connection = options.get("connection")
        if connection is not None:
            await self._push_in_caller_transaction(connection, records, rows)
            return

        async def body(cur: TransactionCursor) -> None:
            await self._insert_all(cur, rows)

        await self._db.transaction(body)
        self._changed.notify()

    async def _insert_all(self, cur: Cursor, rows: list[Any]) -> None:
        try:
            await cur.executemany(self.sql.insert, rows)
        except aiomysql.IntegrityError as e:
            if error_code(e) == DUPLICATE_KEY:
                raise DuplicateJobError(
                    f"{self._where}: the batch holds a unique job whose key is already pending "
                    "(nothing was stored)"
                ) from e
            raise self._db.wrap(e) from e

    async def _push_in_caller_transaction(
        self, conn: Any, records: Sequence[JobRecord], rows: list[Any] | None = None
    ) -> bool:
        """Insert with the caller's connection, inside the transaction it has begun.

        The tables are named with their database, so the connection may have any database
        selected. A savepoint makes a refused batch leave the caller's transaction as it was.
        """
        if not isinstance(conn, aiomysql.Connection):
            raise DriverError(
                f"{self._where}: connection= must be an aiomysql.Connection to the same server, "
                f"got {type(conn).__name__}"
            )
        rows = rows if rows is not None else [record_to_row(r) for r in records]
        try:
            async with conn.cursor() as cur:
                if len(records) == 1:
                    return await self._insert_one(cur, records[0], rows[0])
                await cur.execute("SAVEPOINT queuekit_push")
                try:
                    await self._insert_all(cur, rows)
                except BaseException:
                    await cur.execute("ROLLBACK TO SAVEPOINT queuekit_push")
                    raise
                await cur.execute("RELEASE SAVEPOINT queuekit_push")
                return True
        except aiomysql.Error as e:
            raise self._db.wrap(e) from e

    # -- reserving -------------------------------------------------------------------------

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        names = None if queues is None else tuple(queues)
        return await lease_or_wait(
            lambda: self._db.transaction(
                lambda cur: self._lease_rows(cur, names, lease, max(limit, 1))
            ),
            self._changed,
            wait=wait,
            poll_interval=self.options.poll_interval,
            failed_table=self.options.failed_table,
        )

    async def _lease_rows(
        self,
        cur: TransactionCursor,
        queues: tuple[str, ...] | None,
        lease: float,
        limit: int,
        *,
        quarantine: bool = True,
    ) -> tuple[list[JobRecord], list[str]]:
        """Lease up to ``limit`` due rows: ``(records, errors of unreadable rows)``.

        Unreadable rows are moved to the failed table, or with ``quarantine=False`` left as
        they were; either way nothing is leased when one is found.
        """
        at = now()
        if queues is None:
            await cur.execute(self.sql.take_any, (at, at, limit))
            rows = list(await cur.fetchall())
        else:
            rows = []
            for queue in queues:  # a list of queues is tried in order
                await cur.execute(self.sql.take_queue, (queue, at, at, limit - len(rows)))
                rows.extend(await cur.fetchall())
                if len(rows) >= limit:
                    break
        if not rows:
            return [], []
        records, corrupt = decode_leased(rows, self.options.table)
        if corrupt and not quarantine:
            return [], [str(e) for _, e in corrupt]
        if corrupt:
            # The readable rows are left as they were (not leased): they cost nothing.
            for seq, error in corrupt:
                await cur.execute(self.sql.quarantine, (str(error), at, seq))
                await cur.execute(self.sql.delete_seq, (seq,))
            return [], [str(e) for _, e in corrupt]
        until = at + lease
        seqs = [row[0] for row in rows]
        tokens = [f"{seq}.{os.urandom(8).hex()}" for seq in seqs]
        pairs = [value for pair in zip(seqs, tokens, strict=True) for value in pair]
        cur.then_commit(self.sql.lease(len(seqs)), (until, *pairs, *seqs))
        for record, token in zip(records, tokens, strict=True):
            record.attempts += 1
            record.reserved_until = until
            record.lease_token = token
        return records, []  # already in reservation order: ORDER BY ... FOR UPDATE

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """Delete a finished job and lease the next ones in one transaction.

        The server syncs its log at every commit, so a worker taking one job at a time pays one
        sync per job instead of two. When nothing is due the deletion is committed first and
        the wait is ``reserve_many``'s.
        """
        if limit <= 0:
            return await self.complete(record), []
        fence = fence_of(record)
        names = None if queues is None else tuple(queues)

        async def body(cur: TransactionCursor) -> tuple[bool, list[JobRecord]]:
            completed = False
            if fence is not None:
                await cur.execute(self.sql.complete, fence)
                completed = cur.rowcount > 0
            records, corrupt = await self._lease_rows(cur, names, lease, limit, quarantine=False)
            # Unreadable rows stay as they were: the next reserve() moves them to the failed
            # table and raises there, so this call never leaves the caller unsure whether its
            # completion was stored.
            return completed, [] if corrupt else records

        completed, records = await self._db.transaction(body)
        if records or wait <= 0:
            return completed, records
        return completed, await self.reserve_many(queues, lease=lease, limit=limit, wait=wait)

    # -- settling a lease ------------------------------------------------------------------

    async def _fenced(self, statement: str, params: Sequence[Any]) -> int:
        async def body(cur: aiomysql.Cursor) -> int:
            await cur.execute(statement, params)
            return int(cur.rowcount)

        return await self._db.autocommit(body)

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        until = now() + lease
        if not await self._fenced(self.sql.extend, (until, *fence)):
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        return await self._fenced(self.sql.complete, fence) > 0

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Delete several finished jobs in one transaction; one flag per record."""
        fences = [fence_of(r) for r in records]
        held = [f for f in fences if f is not None]
        if not held:
            return [False] * len(records)
        seqs = [seq for seq, _ in held]
        tokens = [token for _, token in held]

        async def body(cur: TransactionCursor) -> set[tuple[int, str]]:
            # Common case first: every lease held, one DELETE settles them all.
            await cur.execute(self.sql.complete_many(len(held)), (*seqs, *tokens))
            if cur.rowcount == len(held):
                return set(held)
            raise _SomeLeasesLost

        try:
            done = await self._db.transaction(body)
        except _SomeLeasesLost:
            done = await self._db.transaction(lambda cur: self._complete_held(cur, held))
        return [f is not None and f in done for f in fences]

    async def _complete_held(
        self, cur: TransactionCursor, held: list[tuple[int, str]]
    ) -> set[tuple[int, str]]:
        """Lock the rows, see which leases still hold, delete exactly those."""
        await cur.execute(self.sql.lock_held(len(held)), [seq for seq, _ in held])
        current = {(int(seq), token) for seq, token in await cur.fetchall()}
        mine = [f for f in held if f in current]
        if mine:
            await cur.execute(
                self.sql.complete_many(len(mine)),
                (*(seq for seq, _ in mine), *(token for _, token in mine)),
            )
        return set(mine)

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False
        params = (record.attempts, error, now() + delay, *fence)
        released = await self._fenced(self.sql.release, params) > 0
        if released:
            self._changed.notify()
        return released

    async def fail(self, record: JobRecord, error: str) -> bool:
        fence = fence_of(record)
        if fence is None:
            return False

        async def body(cur: TransactionCursor) -> bool:
            await cur.execute(self.sql.copy_to_failed, (error, now(), *fence))
            if cur.rowcount == 0:
                return False
            await cur.execute(self.sql.complete, fence)
            if cur.rowcount == 0:
                raise _SomeLeasesLost  # the copy read a lease lost meanwhile: undo it
            return True

        try:
            return await self._db.transaction(body)
        except _SomeLeasesLost:
            return False


class _SomeLeasesLost(Exception):
    """Rolls a settling transaction back when a lease turned out to be lost."""
