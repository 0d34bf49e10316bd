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
- a push of a due job sends ``NOTIFY``; a waiting ``reserve`` listens on one dedicated connection
  per driver and wakes at once, polling every ``poll_interval`` only for delayed jobs falling due
  and leases running out (and while the listening connection is down);
- ``push(record, connection=conn)`` writes with the caller's own psycopg connection, inside its open
  transaction: the job (and its NOTIFY) exists if and only if that transaction commits.

Config (``queue.database``)::

    {"url": "postgresql://user@host/db", "table": "queue_jobs",
     "failed_table": "queue_failed_jobs", "retry_after": 90}
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from ...clock import new_token, now
from ...errors import CorruptStoreError, DriverError, DuplicateJobError, PayloadError
from ...record import JobRecord
from ..base import Capability, QueueDriver, QueueStats
from .options import DatabaseOptions
from .postgres_pipeline import PipelinedSession, Statement
from .postgres_sql import COPY_TYPES, PostgresStatements, channel_name
from .schema import JOB_COLUMNS, SCHEMA_VERSION, record_from_row, record_to_row

__all__ = ["PostgresDriver"]

log = logging.getLogger("queuekit.database.postgres")

# Up to this many rows, push_many is one INSERT (one round trip); above it, one COPY (two round
# trips, but psycopg encodes COPY rows in C, while array parameters cost ~2 us a value).
_INSERT_ROWS = 16
_LISTEN_BACKOFF_MAX = 5.0


class _Wakeups:
    """Idle reservers waiting for a NOTIFY, and a counter telling whether one came meanwhile.

    A reserver reads ``generation`` before it queries and waits only if it has not moved since:
    a NOTIFY that lands between an empty query and the wait is never missed.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def wake(self) -> None:
        """Something may be due: every waiter looks again."""
        self.generation += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a wake-up, unless one came after ``seen``."""
        if self.generation != seen or timeout <= 0:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            self._waiters.discard(fut)
            fut.cancel()


def _conninfo(url: str) -> str:
    """The libpq URI of ``url``: ``postgresql+psycopg://`` and friends lose their driver suffix."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _redact(url: str) -> str:
    """``url`` with its password hidden, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class PostgresDriver(QueueDriver):
    """The ``database`` driver on PostgreSQL: durable, shared by many workers on many machines.

    Options are ``DatabaseOptions`` (``url``, ``table``, ``failed_table``, ``retry_after``,
    ``pool_size``, ``poll_interval``, ``connect_timeout``). See ``docs/drivers/postgres.md``.

    Example::

        driver = PostgresDriver({"url": "postgresql://postgres@127.0.0.1/test"})
        await driver.connect()          # creates the tables, indexes and schema record
    """

    name = "database"
    capabilities = (
        Capability.PRIORITY
        | Capability.DELAY
        | Capability.ATOMIC_BATCH
        | Capability.BLOCKING_WAIT
        | Capability.PERSISTENT
        | Capability.TRANSACTIONAL
        | Capability.UNIQUE
    )

    def __init__(self, options: Mapping[str, Any] | DatabaseOptions) -> None:
        self.options = DatabaseOptions.parse(
            options if isinstance(options, DatabaseOptions) else dict(options)
        )
        self.default_lease = self.options.retry_after
        self.table = self.options.table
        self.failed_table = self.options.failed_table
        self.sql = PostgresStatements.render(self.table, self.failed_table)
        self._conninfo = _conninfo(self.options.url)
        self._where = f"PostgreSQL {_redact(self.options.url)} table {self.table!r}"
        self._channel = channel_name(self.table)
        # Names the driver's sessions in pg_stat_activity, so a DBA can tell them apart.
        self._application_name = f"queuekit:{self.table}"[:63]
        self._listener_name = f"queuekit:{self.table}:listen"[:63]
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "application_name": self._application_name,
            # libpq takes whole seconds.
            "connect_timeout": max(1, round(self.options.connect_timeout)),
        }
        self._pool: AsyncConnectionPool | None = None
        self._session: PipelinedSession | None = None
        # Statements nobody waits for: hand-backs of reservations whose caller was cancelled
        # mid-flight (see _take) and wake-ups after a COPY (see push_many).
        self._background: set[asyncio.Task[None]] = set()
        self._wakeups = _Wakeups()
        self._listener: asyncio.Task[None] | None = None
        # Set once the first LISTEN attempt is over, whether it worked or not.
        self._listen_tried = asyncio.Event()

    # -- connecting ------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the pool, then create the tables, indexes and schema version record."""
        if self._pool is not None:
            return
        pool = AsyncConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.options.pool_size,
            kwargs=self._connect_kwargs,
            timeout=self.options.connect_timeout,
            name=f"queuekit-{self.table}",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self.options.connect_timeout)
        except Exception as e:
            await pool.close()
            raise DriverError(f"{self._where}: cannot connect: {e}") from e
        self._pool = pool
        # Opens its connection on the first frequent statement, after the schema exists.
        self._session = PipelinedSession(
            self._conninfo, self._connect_kwargs, size=self.options.pool_size
        )
        try:
            await self._create_schema()
        except BaseException:
            await self.close()
            raise

    async def _create_schema(self) -> None:
        async with self._connection("create the schema") as conn, conn.transaction():
            await conn.execute(self.sql.schema_lock)
            for statement in self.sql.create:
                await conn.execute(statement)
            for table in (self.table, self.failed_table):
                params = {"table": table, "version": SCHEMA_VERSION}
                await conn.execute(self.sql.record_version, params)
                row = await (await conn.execute(self.sql.read_version, params)).fetchone()
                found = row[0] if row else None
                if found != SCHEMA_VERSION:
                    raise DriverError(
                        f"{self._where}: table {table!r} has schema version {found!r}; this "
                        f"release reads version {SCHEMA_VERSION} (upgrade queuekit to use it)"
                    )

    async def close(self) -> None:
        """Stop listening and close every connection; idempotent."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.options.connect_timeout)
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _live_pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise DriverError(f"{self._where}: the driver is not connected (call connect())")
        return self._pool

    def _live_session(self) -> PipelinedSession:
        if self._session is None:
            raise DriverError(f"{self._where}: the driver is not connected (call connect())")
        return self._session

    def _failure(self, action: str, error: Exception) -> DriverError:
        return DriverError(f"{self._where}: {action} failed: {error}")

    @contextlib.asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; psycopg and pool errors become ``DriverError`` naming the table."""
        try:
            async with self._live_pool().connection() as conn:
                yield conn
        except (psycopg.Error, OSError) as e:
            raise self._failure(action, e) from e

    # _execute and _fetch run the pooled statements: no context-manager generator per call.

    async def _execute(self, action: str, query: bytes, params: Mapping[str, Any]) -> int:
        """Run one statement; returns its row count."""
        try:
            async with self._live_pool().connection() as conn:
                cur = await conn.execute(query, params)
                return cur.rowcount
        except (psycopg.Error, OSError) as e:
            raise self._failure(action, e) from e

    async def _fetch(
        self, action: str, query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run one statement; returns its rows."""
        try:
            async with self._live_pool().connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
        except (psycopg.Error, OSError) as e:
            raise self._failure(action, e) from e

    async def _run(self, action: str, statement: Statement, args: Sequence[Any]) -> int:
        """Run one statement on the pipelined session; returns its row count."""
        try:
            return await self._live_session().execute(statement, args)
        except (psycopg.Error, OSError) as e:
            raise self._failure(action, e) from e

    async def _run_fetch(
        self,
        action: str,
        statement: Statement,
        args: Sequence[Any],
        orphaned: Any = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the pipelined session; returns its rows."""
        try:
            return await self._live_session().fetch(statement, args, orphaned=orphaned)
        except (psycopg.Error, OSError) as e:
            raise self._failure(action, e) from e

    # -- listening -------------------------------------------------------------------------

    async def _ensure_listener(self) -> None:
        """Start the LISTEN connection on the first waiting reserve.

        Lazily, so a process that only dispatches (a web app) holds no listening connection and
        reads no notifications. Waits for the first attempt to LISTEN: once it succeeded, a push
        committed after this returns always wakes the caller.
        """
        if self._listener is None:
            self._listener = asyncio.create_task(
                self._listen(), name=f"queuekit-listen-{self.table}"
            )
        await self._listen_tried.wait()

    async def _listen(self) -> None:
        """Hold the dedicated LISTEN connection, reconnecting with backoff when it drops.

        While it is down, waiting reservers fall back to polling every ``poll_interval``.
        """
        backoff = 0.1
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    **{**self._connect_kwargs, "application_name": self._listener_name},
                )
                await conn.execute(self.sql.listen)
                self._listen_tried.set()
                backoff = 0.1
                # Jobs pushed while no LISTEN was in effect sent their NOTIFY to nobody.
                self._wakeups.wake()
                async for _ in conn.notifies():
                    self._wakeups.wake()
            except (psycopg.Error, OSError) as e:
                log.warning(
                    "queuekit: %s: no listening connection (%s); waiting reservers poll every "
                    "%ss until it is back",
                    self._where,
                    e,
                    self.options.poll_interval,
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._listen_tried.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _LISTEN_BACKOFF_MAX)

    # -- pushing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        """Insert one job; False when a pending or running job holds its ``unique_key``.

        ``connection=`` a psycopg ``AsyncConnection`` or ``Connection`` writes the job through
        that connection, inside its open transaction: it exists iff that transaction commits.
        """
        row = record_to_row_checked(record)
        # A delayed job wakes nobody: idle workers would only find it not yet due.
        due = record.available_at <= now()
        connection = options.get("connection")
        if connection is None and record.unique_key is None:
            return await self._insert(row, due)
        params = dict(zip(JOB_COLUMNS, row, strict=True))
        params["channel"] = self._channel
        query = self.sql.push_notify if due else self.sql.push
        if connection is not None:
            return await self._push_on(connection, query, params) == 1
        # The INSERT of a unique job waits while a transaction that is still open holds an equal
        # key: on a pooled connection, so that it holds up no other statement.
        return await self._execute("push", query, params) == 1

    async def _insert(self, row: tuple[Any, ...], due: bool) -> bool:
        """Insert a job without a unique_key on the pipelined session."""
        hot = self.sql.hot
        try:
            if due:
                await self._live_session().execute(hot.insert_job_notify, (*row, self._channel))
            else:
                await self._live_session().execute(hot.insert_job, row)
        except psycopg.errors.UniqueViolation:
            return False  # its id is taken (the same record pushed twice): not stored
        except (psycopg.Error, OSError) as e:
            raise self._failure("push", e) from e
        return True

    async def _push_on(self, connection: Any, query: bytes, params: Mapping[str, Any]) -> int:
        """Run a push statement on the caller's connection, in its transaction."""
        try:
            if isinstance(connection, psycopg.AsyncConnection):
                cur = await connection.execute(query, params)
                return cur.rowcount
            if isinstance(connection, psycopg.Connection):
                # The caller's blocking connection must not stall the event loop.
                return await asyncio.to_thread(_execute_sync, connection, query, params)
        except psycopg.Error as e:
            raise DriverError(f"{self._where}: push on the caller's connection failed: {e}") from e
        raise TypeError(
            "connection= must be a psycopg Connection or AsyncConnection with an open "
            f"transaction on the queue's database, got {type(connection).__name__}"
        )

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        """Insert every record or none: one INSERT for a few, one binary COPY for more.

        Raises ``DuplicateJobError`` (storing nothing) when an id or ``unique_key`` is taken.
        ``connection=`` writes the batch inside the caller's open transaction, as ``push``.
        """
        if not records:
            return
        rows = [record_to_row_checked(r) for r in records]
        at = now()
        due = sorted({r.queue for r in records if r.available_at <= at})
        connection = options.get("connection")
        try:
            if connection is not None:
                await self._push_many_on(connection, rows, due)
            elif len(rows) <= _INSERT_ROWS:
                columns = zip(*rows, strict=True)
                params: dict[str, Any] = {
                    c: list(v) for c, v in zip(JOB_COLUMNS, columns, strict=True)
                }
                params.update(channel=self._channel, now=at)
                await self._execute("push a batch", self.sql.push_many, params)
            else:
                async with self._connection("push a batch") as conn:
                    # Autocommit: the COPY is its own transaction, all rows or none.
                    await self._copy(conn, rows)
                if due:
                    self._wake_later(due)
        except DriverError as e:
            if isinstance(e.__cause__, psycopg.errors.UniqueViolation):
                raise DuplicateJobError(
                    f"{self._where}: the batch holds a job whose id or unique_key is already "
                    "pending or running; nothing was stored"
                ) from e.__cause__
            raise

    def _wake_later(self, queues: list[str]) -> None:
        """NOTIFY idle workers of ``queues``, whose jobs have committed, without waiting for it.

        Only a wake-up: were it lost, idle workers would still find the jobs within
        ``poll_interval``. Not waiting spares the batch a round trip.
        """
        statement = self.sql.hot.notify_committed
        args = statement.args({"channel": self._channel, "queues": queues})

        async def wake() -> None:
            try:
                await self._run("wake idle workers", statement, args)
            except DriverError as e:
                log.warning("queuekit: %s (they look again within poll_interval)", e)

        self._in_background(wake())

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in a task that ``close`` waits for."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _copy(self, conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]]) -> None:
        """COPY ``rows`` in, in binary, in whatever transaction ``conn`` is in."""
        async with conn.cursor() as cur, cur.copy(self.sql.copy_jobs) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                await copy.write_row(row)

    async def _copy_notify(
        self, conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]], due: list[str]
    ) -> None:
        """COPY ``rows`` in and NOTIFY the ``due`` queues, in the transaction ``conn`` is in."""
        await self._copy(conn, rows)
        if due:
            await conn.execute(self.sql.notify_queues, {"channel": self._channel, "queues": due})

    def _copy_notify_sync(
        self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], due: list[str]
    ) -> None:
        """``_copy_notify`` on a caller's blocking connection (run in a thread)."""
        scope = conn.transaction() if _own_transaction(conn) else contextlib.nullcontext()
        with scope, conn.cursor() as cur:
            with cur.copy(self.sql.copy_jobs) as copy:
                copy.set_types(COPY_TYPES)
                for row in rows:
                    copy.write_row(row)
            if due:
                cur.execute(self.sql.notify_queues, {"channel": self._channel, "queues": due})

    async def _push_many_on(
        self, connection: Any, rows: list[tuple[Any, ...]], due: list[str]
    ) -> None:
        """``push_many`` on the caller's connection, inside its transaction.

        Under a savepoint where the caller's transaction is open, so that a refused batch does
        not abort the caller's whole transaction (see ``_own_transaction``).
        """
        try:
            if isinstance(connection, psycopg.AsyncConnection):
                if _own_transaction(connection):
                    async with connection.transaction():
                        await self._copy_notify(connection, rows, due)
                else:
                    await self._copy_notify(connection, rows, due)
                return
            if isinstance(connection, psycopg.Connection):
                await asyncio.to_thread(self._copy_notify_sync, connection, rows, due)
                return
        except psycopg.Error as e:
            raise DriverError(
                f"{self._where}: push of a batch on the caller's connection failed: {e}"
            ) from e
        raise TypeError(
            "connection= must be a psycopg Connection or AsyncConnection with an open "
            f"transaction on the queue's database, got {type(connection).__name__}"
        )

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
            await self._ensure_listener()
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
            rows = await self._run_fetch("reserve", statement, statement.args(params), orphaned)
        else:
            rows = []
            for queue in queues:
                params["queue"] = queue
                params["limit"] = limit - len(rows)
                args = hot.reserve_queue.args(params)
                rows += await self._run_fetch("reserve", hot.reserve_queue, args, orphaned)
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
                await self._execute("hand back a reservation", self.sql.unreserve, params)
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
        async with self._connection("set aside an unreadable row") as conn, conn.transaction():
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
        if await self._run("extend a lease", extend, extend.args(params)) != 1:
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        """Delete a finished job; False if the lease was lost."""
        complete = self.sql.hot.complete
        args = complete.args({"id": record.id, "token": record.lease_token})
        return await self._run("complete", complete, args) == 1

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        """Delete several finished jobs in one statement; one flag per record."""
        if not records:
            return []
        complete_many = self.sql.hot.complete_many
        params = {"ids": [r.id for r in records], "tokens": [r.lease_token for r in records]}
        rows = await self._run_fetch("complete a batch", complete_many, complete_many.args(params))
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
            "channel": self._channel,
        }
        statement = self.sql.hot.release_notify if delay <= 0 else self.sql.hot.release
        return await self._run("release", statement, statement.args(params)) == 1

    async def fail(self, record: JobRecord, error: str) -> bool:
        """Move the job to the failed table with ``error``; False if the lease was lost."""
        fail = self.sql.hot.fail
        params = {"id": record.id, "token": record.lease_token, "error": error, "now": now()}
        return await self._run("fail", fail, fail.args(params)) == 1

    # -- inspecting and managing -----------------------------------------------------------

    async def stats(self, queues: Sequence[str] | None = None) -> QueueStats:
        """Counts per queue: ``pending`` (due now), ``delayed``, ``reserved``, ``failed``."""
        params: dict[str, Any] = {"now": now()}
        if queues is None:
            rows = await self._fetch("count jobs", self.sql.stats_all, params)
            out: QueueStats = {}
        else:
            params["queues"] = list(queues)
            rows = await self._fetch("count jobs", self.sql.stats_queues, params)
            out = {q: {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0} for q in queues}
        for queue, pending, delayed, reserved, failed in rows:
            counts = out.setdefault(queue, {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0})
            counts["pending"] += pending
            counts["delayed"] += delayed
            counts["reserved"] += reserved
            counts["failed"] += failed
        return out

    async def failed(self, *, queue: str | None = None, limit: int = 100) -> list[JobRecord]:
        """Failed jobs, oldest failure first, at most ``limit``; unreadable rows are logged."""
        if queue is None:
            query, params = self.sql.failed_all, {"limit": limit}
        else:
            query, params = self.sql.failed_queue, {"limit": limit, "queue": queue}
        rows = await self._fetch("list failed jobs", query, params)
        records = []
        for row in rows:
            try:
                records.append(record_from_row(row, self.failed_table, failed=True))
            except CorruptStoreError as e:
                # One unreadable row must not hide every other failed job.
                log.error(
                    "queuekit: %s (skipped; inspect it with SQL, forget_failed removes it)", e
                )
        return records

    async def retry_failed(self, ids: Sequence[str] | None = None) -> int:
        """Move failed jobs (all when ``ids`` is None) back as new; returns how many moved.

        A job whose ``unique_key`` is held by a pending job stays in the failed table.
        """
        params: dict[str, Any] = {"now": now(), "channel": self._channel}
        if ids is None:
            query = self.sql.retry_all
        else:
            if not ids:
                return 0
            query, params["ids"] = self.sql.retry_ids, list(ids)
        rows = await self._fetch("retry failed jobs", query, params)
        return int(rows[0][0])

    async def forget_failed(self, ids: Sequence[str] | None = None) -> int:
        """Delete failed jobs (all when ``ids`` is None); returns how many were deleted."""
        if ids is None:
            return await self._execute("forget failed jobs", self.sql.forget_all, {})
        if not ids:
            return 0
        return await self._execute("forget failed jobs", self.sql.forget_ids, {"ids": list(ids)})

    async def purge(self, queue: str) -> int:
        """Delete every pending and delayed job of ``queue``; running jobs are left alone."""
        return await self._execute("purge", self.sql.purge, {"queue": queue, "now": now()})


def record_to_row_checked(record: JobRecord) -> tuple[Any, ...]:
    """``record_to_row``, with a payload that is not JSON reported as ``PayloadError``."""
    try:
        return record_to_row(record)
    except (TypeError, ValueError) as e:
        raise PayloadError(
            f"job {record.job_name} {record.id}: payload or meta cannot be stored as JSON: {e}"
        ) from e


def _execute_sync(conn: psycopg.Connection[Any], query: bytes, params: Mapping[str, Any]) -> int:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.rowcount


def _own_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a batch on the caller's ``conn`` goes in a ``transaction()`` block of its own.

    Inside an open transaction that block is a savepoint, so a refused batch does not abort the
    caller's transaction; in autocommit it makes the batch atomic. A non-autocommit connection
    with no transaction yet must not get one: psycopg would COMMIT it at the end of the block,
    while the caller's first statement (ours) should open the caller's transaction.
    """
    return conn.autocommit or conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
