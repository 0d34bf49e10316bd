"""``PostgresDriver``: the PostgreSQL dialect of the ``database`` driver (psycopg 3, async).

Many workers on many machines share one PostgreSQL database. Almost every operation is one SQL
statement in autocommit (see ``postgres_sql``), so it is one round trip and atomic on its own.
The frequent ones run on one pipelined session per driver (see ``postgres_pipeline``), where
concurrent statements share round trips; the rest use a connection pool.

- ``reserve`` / ``reserve_many`` lease due jobs with ``FOR UPDATE SKIP LOCKED``, reclaiming
  expired leases and counting the attempt in the same statement;
- ``extend``, ``complete``, ``release`` and ``fail`` are fenced by ``id AND lease_token``;
- ``push_many`` is all or nothing: one INSERT for a few jobs, one binary COPY for more;
- ``complete`` and ``complete_many`` (one DELETE for many) commit without waiting for the disk:
  only a crash of the database server can undo one, and then the job runs again (at least once);
- a push of a due job is announced by a ``NOTIFY`` sent after its commit (within a millisecond, in
  a transaction of its own, shared by the commits of that millisecond); a waiting ``reserve``
  listens on one dedicated connection per driver and wakes at once, polling every
  ``poll_interval`` only for delayed jobs falling due and leases running out (and while the
  listening connection is down);
- ``push(record, connection=conn)`` writes with the caller's own psycopg connection, inside its open
  transaction: the job (and its NOTIFY) exists if and only if that transaction commits.

Its parts live beside it: every statement in ``postgres_sql`` (the tables and indexes in
``postgres_schema``); the pool and the pipelined
session in ``postgres_connections`` (and ``postgres_pipeline``); COPY and row encoding in
``postgres_copy``; writes on the caller's connection in ``postgres_caller``; LISTEN and wake-ups
in ``postgres_listen``; stats and failed-job management in ``postgres_admin``.

Config (``queue.database``)::

    {"url": "postgresql://user@host/db", "table": "queue_jobs",
     "failed_table": "queue_failed_jobs", "retry_after": 90}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

import psycopg

from ...clock import new_token, now
from ...errors import CorruptStoreError, DriverError, DuplicateJobError
from ...record import JobRecord
from ..base import Capability, QueueDriver
from .common import SQL_CAPABILITIES
from .options import DatabaseOptions
from .postgres_admin import PostgresAdmin
from .postgres_caller import CallerWrites
from .postgres_connections import PostgresConnections, redact
from .postgres_copy import copy_rows, due_queues
from .postgres_listen import CommitNotices, Listener, Wakeups
from .postgres_schema import create_schema
from .postgres_sql import PostgresStatements, channel_name
from .schema import JOB_COLUMNS, record_from_row, record_to_row

__all__ = ["PostgresDriver"]

log = logging.getLogger("queuekit.database.postgres")

# Up to this many rows, push_many is one INSERT (one round trip); above it, one COPY (two round
# trips, but psycopg encodes COPY rows in C, while array parameters cost ~2 us a value).
_INSERT_ROWS = 16


class PostgresDriver(PostgresAdmin, QueueDriver):
    """The ``database`` driver on PostgreSQL: durable, shared by many workers on many machines.

    Options are ``DatabaseOptions`` (``url``, ``table``, ``failed_table``, ``retry_after``,
    ``pool_size``, ``poll_interval``, ``connect_timeout``). See ``docs/drivers/postgres.md``.

    Example::

        driver = PostgresDriver({"url": "postgresql://postgres@127.0.0.1/test"})
        await driver.connect()          # creates the tables, indexes and schema record
    """

    name = "database"
    capabilities = SQL_CAPABILITIES | Capability.BLOCKING_WAIT

    def __init__(self, options: Mapping[str, Any] | DatabaseOptions) -> None:
        self.options = DatabaseOptions.parse(
            options if isinstance(options, DatabaseOptions) else dict(options)
        )
        self.default_lease = self.options.retry_after
        self.table = self.options.table
        self.failed_table = self.options.failed_table
        self.sql = PostgresStatements.render(self.table, self.failed_table)
        self._where = f"PostgreSQL {redact(self.options.url)} table {self.table!r}"
        self._channel = channel_name(self.table)
        # Names the driver's sessions in pg_stat_activity, so a DBA can tell them apart.
        connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": f"queuekit:{self.table}"[:63],
            # libpq takes whole seconds.
            "connect_timeout": max(1, round(self.options.connect_timeout)),
        }
        self._db = PostgresConnections(self.options, self._where, connect_kwargs)
        self._caller = CallerWrites(self.sql, self._channel, self._where)
        self._wakeups = Wakeups()
        self._listener = Listener(
            self._db.conninfo,
            {**connect_kwargs, "application_name": f"queuekit:{self.table}:listen"[:63]},
            self.sql.listen,
            self._wakeups,
            where=self._where,
            poll_interval=self.options.poll_interval,
        )
        self._notices = CommitNotices(self._send_notices)
        # Statements nobody waits for: hand-backs of reservations whose caller was cancelled
        # mid-flight (see _take).
        self._background: set[asyncio.Task[None]] = set()

    # -- connecting ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool, then create the tables, indexes and schema version record."""
        if self._db.is_open:
            return
        await self._db.open(name=f"queuekit-{self.table}")
        try:
            async with self._db.connection("create the schema") as conn:
                await create_schema(conn, self.sql, (self.table, self.failed_table), self._where)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        await self._listener.close()
        await self._notices.close(timeout=self.options.connect_timeout)
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.options.connect_timeout)
        await self._db.close()

    # -- pushing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        """Insert one job; False when a pending or running job holds its ``unique_key``.

        ``connection=`` a psycopg ``AsyncConnection`` or ``Connection`` writes the job through
        that connection, inside its open transaction: it exists iff that transaction commits.
        """
        row = record_to_row(record)
        # A delayed job wakes nobody: idle workers would only find it not yet due.
        due = record.available_at <= now()
        connection = options.get("connection")
        if connection is not None:
            params = dict(zip(JOB_COLUMNS, row, strict=True))
            params["channel"] = self._channel
            query = self.sql.push_notify if due else self.sql.push
            return await self._caller.push(connection, query, params) == 1
        if record.unique_key is None:
            stored = await self._insert(row)
        else:
            # The INSERT of a unique job waits while a transaction that is still open holds an
            # equal key: on a pooled connection, so that it holds up no other statement.
            params = dict(zip(JOB_COLUMNS, row, strict=True))
            stored = await self._db.execute("push", self.sql.push, params) == 1
        if stored and due:
            self._announce((record.queue,))
        return stored

    async def _insert(self, row: tuple[Any, ...]) -> bool:
        """Insert a job without a unique_key on the pipelined session."""
        try:
            await self._db.session().execute(self.sql.hot.insert_job, row)
        except psycopg.errors.UniqueViolation:
            return False  # its id is taken (the same record pushed twice): not stored
        except (psycopg.Error, OSError) as e:
            raise self._db.failure("push", e) from e
        return True

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        """Insert every record or none: one INSERT for a few, one binary COPY for more.

        Raises ``DuplicateJobError`` (storing nothing) when an id or ``unique_key`` is taken.
        ``connection=`` writes the batch inside the caller's open transaction, as ``push``.
        """
        if not records:
            return
        due = due_queues(records, now())
        connection = options.get("connection")
        try:
            if connection is not None:
                rows = [record_to_row(r) for r in records]
                await self._caller.push_many(connection, rows, due)
                return
            if len(records) <= _INSERT_ROWS:
                await self._insert_few(records)
            else:
                async with self._db.connection("push a batch") as conn:
                    # Autocommit: the COPY is its own transaction, all rows or none. Rows are
                    # encoded as they go out, while the server stores the ones before them.
                    await copy_rows(conn, self.sql.copy_jobs, map(record_to_row, records))
        except DriverError as e:
            if isinstance(e.__cause__, psycopg.errors.UniqueViolation):
                raise DuplicateJobError(
                    f"{self._where}: the batch holds a job whose id or unique_key is already "
                    "pending or running; nothing was stored"
                ) from e.__cause__
            raise
        self._announce(due)

    async def _insert_few(self, records: Sequence[JobRecord]) -> None:
        """A small batch as one INSERT of arrays."""
        columns = zip(*(record_to_row(r) for r in records), strict=True)
        params: dict[str, Any] = {c: list(v) for c, v in zip(JOB_COLUMNS, columns, strict=True)}
        await self._db.execute("push a batch", self.sql.push_many, params)

    def _announce(self, queues: Sequence[str]) -> None:
        """Wake idle reservers of ``queues``, whose new jobs have just committed.

        This driver's own waiting reservers look again at once; those of other drivers and
        processes are sent a NOTIFY shortly after (see ``CommitNotices``).
        """
        if queues:
            self._wakeups.wake()
            self._notices.committed(queues)

    async def _send_notices(self, queues: list[str]) -> None:
        """NOTIFY ``queues`` on the pipelined session; only a wake-up, so a failure is logged."""
        statement = self.sql.hot.notify_committed
        args = statement.args({"channel": self._channel, "queues": queues})
        try:
            await self._db.run("wake idle workers", statement, args)
        except DriverError as e:
            log.warning("queuekit: %s (they look again within poll_interval)", e)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task that ``close`` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- reserving -------------------------------------------------------------------------

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        """Lease up to ``limit`` due jobs in one round trip (one per queue tried, for a list).

        While nothing is due it waits up to ``wait`` seconds, woken by NOTIFY.
        """
        if limit < 1:
            return []
        if wait > 0:
            await self._listener.ensure()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            seen = self._wakeups.generation
            records = await self._take(queues, lease, limit)
            if records:
                return records
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            # Delayed jobs falling due and leases running out send no NOTIFY: poll for those.
            await self._wakeups.wait(seen, min(remaining, self.options.poll_interval))

    async def _take(
        self, queues: Sequence[str] | None, lease: float, limit: int
    ) -> list[JobRecord]:
        at = now()
        token = new_token()
        params: dict[str, Any] = {"now": at, "until": at + lease, "token": token, "limit": limit}

        def orphaned(rows: list[tuple[Any, ...]]) -> None:
            # The caller was cancelled while its reservation ran: hand those jobs back now
            # rather than leave them leased to nobody until the lease runs out.
            self._hand_back([row[0] for row in rows], token)

        hot = self.sql.hot
        if queues is None:
            statement = hot.reserve_across_queues(limit)
            rows = await self._db.run_fetch("reserve", statement, statement.args(params), orphaned)
        else:
            rows = []
            for queue in queues:
                params["queue"] = queue
                params["limit"] = limit - len(rows)
                args = hot.reserve_queue.args(params)
                rows += await self._db.run_fetch("reserve", hot.reserve_queue, args, orphaned)
                if len(rows) >= limit:
                    break
        if not rows:
            return []
        # RETURNING order is not the reservation order: sort by priority, available_at, seq.
        rows.sort(key=lambda row: (-row[4], row[9], row[-1]))
        return await self._decode_reserved(rows, token)

    def _hand_back(self, ids: list[str], token: str) -> None:
        """Undo the reservation of ``ids`` (attempt uncounted), in the background."""

        async def hand_back() -> None:
            try:
                await self._db.execute("hand back a reservation", self.sql.unreserve, params)
            except DriverError as e:
                log.warning("queuekit: %s (they run again once their lease is over)", e)

        params = {"ids": ids, "token": token}
        self._in_background(hand_back())

    async def _decode_reserved(self, rows: list[tuple[Any, ...]], token: str) -> list[JobRecord]:
        """Rebuild the leased rows; unreadable ones are set aside and reported."""
        records: list[JobRecord] = []
        corrupt: list[tuple[str, CorruptStoreError]] = []
        for row in rows:
            try:
                records.append(record_from_row(row[:-1], self.table))
            except CorruptStoreError as e:
                corrupt.append((row[0], e))
        if not corrupt:
            return records
        await self._quarantine(corrupt, records, token)
        raise CorruptStoreError(
            f"{'; '.join(str(e) for _, e in corrupt)}; moved unchanged to table "
            f"{self.failed_table!r} with this error; {len(records)} other job(s) reserved with "
            "it were handed back untouched"
        ) from corrupt[0][1]

    async def _quarantine(
        self, corrupt: list[tuple[str, CorruptStoreError]], records: list[JobRecord], token: str
    ) -> None:
        """Move unreadable rows, byte for byte, to the failed table; hand back the others.

        One transaction: the readable jobs return to the queue with their attempt uncounted (the
        error costs them nothing) and each damaged row leaves the queue, so it is never handed
        out again, yet is kept with the error as ``last_error`` for a person to inspect.
        """
        async with self._db.connection("set aside an unreadable row") as conn, conn.transaction():
            if records:
                params = {"ids": [r.id for r in records], "token": token}
                await conn.execute(self.sql.unreserve, params)
            at = now()
            for row_id, error in corrupt:
                params = {"id": row_id, "token": token, "error": str(error), "now": at}
                await conn.execute(self.sql.fail, params)

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        """Push the lease deadline to ``now + lease``; False if the lease was lost."""
        until = now() + lease
        extend = self.sql.hot.extend
        params = {"id": record.id, "token": record.lease_token, "until": until}
        if await self._db.run("extend a lease", extend, extend.args(params)) != 1:
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        """Delete a finished job; False if the lease was lost."""
        complete = self.sql.hot.complete
        args = complete.args({"id": record.id, "token": record.lease_token})
        return await self._db.run("complete", complete, args) == 1

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Delete several finished jobs in one statement; one flag per record."""
        if not records:
            return []
        complete_many = self.sql.hot.complete_many
        params = {"ids": [r.id for r in records], "tokens": [r.lease_token for r in records]}
        rows = await self._db.run_fetch(
            "complete a batch", complete_many, complete_many.args(params)
        )
        done = {row[0] for row in rows}
        return [r.id in done for r in records]

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        """Put the job back, due after ``delay`` seconds, with ``record.attempts`` as given."""
        params = {
            "id": record.id,
            "token": record.lease_token,
            "available_at": now() + delay,
            "attempts": record.attempts,
            "error": error,
        }
        release = self.sql.hot.release
        released = await self._db.run("release", release, release.args(params)) == 1
        if released and delay <= 0:
            self._announce((record.queue,))
        return released

    async def fail(self, record: JobRecord, error: str) -> bool:
        """Move the job to the failed table with ``error``; False if the lease was lost."""
        fail = self.sql.hot.fail
        params = {"id": record.id, "token": record.lease_token, "error": error, "now": now()}
        return await self._db.run("fail", fail, fail.args(params)) == 1
