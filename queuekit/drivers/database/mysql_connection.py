"""The MySQL/MariaDB connections of ``MySQLDriver``: URL parsing, the pool, and transactions.

``MySQLPool`` runs a driver call on a pooled ``aiomysql`` connection, either statement by
statement (autocommit) or as one transaction that runs again after a deadlock; every server
error comes out as a ``DriverError`` that names the queue's database and server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import aiomysql
from pymysql.constants import CLIENT

from ...errors import ConfigError, DriverError
from .options import DatabaseOptions, url_options

__all__ = [
    "DUPLICATE_KEY",
    "Cursor",
    "MySQLPool",
    "TransactionCursor",
    "connect_kwargs",
    "error_code",
    "queue_label",
]

log = logging.getLogger("queuekit.drivers.mysql")

T = TypeVar("T")

DUPLICATE_KEY = 1062
# Deadlock and lock wait timeout: InnoDB rolled the transaction back; running it again is safe.
_RETRYABLE = (1213, 1205)
_ATTEMPTS = 3


def connect_kwargs(options: DatabaseOptions) -> dict[str, Any]:
    """aiomysql connection arguments from ``mysql://user:password@host:port/database``."""
    parts = urlsplit(options.url)
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ConfigError(
            f"queue.database.url: name the database, as in 'mysql://user@host:3306/queue' "
            f"(got {options.url!r})"
        )
    query = url_options(parts.query, "MySQL", ("unix_socket",))
    try:
        port = parts.port or 3306
    except ValueError as e:
        raise ConfigError(f"queue.database.url: {e} (got {options.url!r})") from e
    kwargs: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": port,
        "user": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else "",
        "db": database,
        "charset": "utf8mb4",
        "autocommit": True,
        "connect_timeout": options.connect_timeout,
        # UPDATE counts matched rows, not changed ones: a fence check must not depend on
        # whether the new value happens to equal the old.
        # MULTI_STATEMENTS lets BEGIN and COMMIT share a round trip with a statement; every
        # value is still escaped by the client, and table names are validated identifiers.
        "client_flag": CLIENT.FOUND_ROWS | CLIENT.MULTI_STATEMENTS,
        "init_command": "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    }
    if "unix_socket" in query:
        kwargs["unix_socket"] = query["unix_socket"][-1]
    return kwargs


def queue_label(kwargs: dict[str, Any], table: str) -> str:
    """How errors name a queue: ``MySQL queue `db`.`table` at host:port``."""
    return f"MySQL queue `{kwargs['db']}`.`{table}` at {kwargs['host']}:{kwargs['port']}"


class MySQLPool:
    """The driver's connection pool; ``where`` names the queue in every error."""

    def __init__(self, kwargs: dict[str, Any], where: str) -> None:
        self._kwargs = kwargs
        self._where = where
        self._pool: aiomysql.Pool | None = None
        self._size = 1
        # aiomysql's connections belong to the event loop that opened them (see _here).
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self, size: int) -> bool:
        """Open the pool of up to ``size`` connections; False when it is open already."""
        if self._pool is not None:
            return False
        try:
            self._pool = await aiomysql.create_pool(
                minsize=1, maxsize=size, pool_recycle=3600, **self._kwargs
            )
        except (aiomysql.Error, OSError) as e:
            raise DriverError(f"{self._where}: cannot connect: {e}") from e
        self._size = size
        self._loop = asyncio.get_running_loop()
        return True

    async def _here(self) -> aiomysql.Pool:
        """The pool, opened anew if it was opened on another event loop.

        A driver used from one ``asyncio.run`` after another (a script, a synchronous web view)
        would otherwise reach for connections of a loop that is gone.
        """
        pool = self._pool
        if pool is None:
            raise DriverError(f"{self._where}: the driver is not connected")
        if self._loop is asyncio.get_running_loop():
            return pool
        self._pool = None
        _abandon(pool)
        await self.open(self._size)
        assert self._pool is not None
        return self._pool

    async def close(self) -> None:
        """Close every pooled connection."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if self._loop is not asyncio.get_running_loop():
            _abandon(pool)
            return
        pool.close()
        await pool.wait_closed()

    def wrap(self, error: BaseException) -> DriverError:
        """``error`` as a ``DriverError`` naming the queue."""
        return DriverError(f"{self._where}: {type(error).__name__}: {error}")

    async def autocommit(self, body: Callable[[aiomysql.Cursor], Awaitable[T]]) -> T:
        """Run ``body`` on a pooled connection, each statement committing on its own."""
        pool = await self._here()
        conn = await self._acquire(pool)
        try:
            async with conn.cursor() as cur:
                return await body(cur)
        except BaseException as e:
            discard_if_broken(conn, e)
            if isinstance(e, aiomysql.Error) and not isinstance(e, aiomysql.IntegrityError):
                raise self.wrap(e) from e
            raise
        finally:
            pool.release(conn)

    async def transaction(self, body: Callable[[TransactionCursor], Awaitable[T]]) -> T:
        """Run ``body`` in one transaction; a deadlock or lock timeout runs it again.

        BEGIN travels with the first statement and COMMIT with the last one the body defers
        (``then_commit``), so a reservation costs two round trips, not four.
        """
        pool = await self._here()
        for attempt in range(1, _ATTEMPTS + 1):
            conn = await self._acquire(pool)
            try:
                async with conn.cursor() as cur:
                    tx = TransactionCursor(cur)
                    result = await body(tx)
                    await tx.commit()
                return result
            except BaseException as e:
                await rollback(conn, e)
                if not isinstance(e, aiomysql.Error) or isinstance(e, aiomysql.IntegrityError):
                    raise
                if error_code(e) in _RETRYABLE and attempt < _ATTEMPTS:
                    log.info("queuekit: %s: %s; running the transaction again", self._where, e)
                    continue
                raise self.wrap(e) from e
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acquire(self, pool: aiomysql.Pool) -> aiomysql.Connection:
        try:
            return await pool.acquire()
        except (aiomysql.Error, OSError) as e:
            raise DriverError(f"{self._where}: cannot get a connection: {e}") from e


class TransactionCursor:
    """A cursor whose transaction opens with its first statement and commits with its last.

    With MULTI_STATEMENTS the server runs ``START TRANSACTION; <statement>`` from one packet;
    the results of the extra statement are skipped, so the body reads its own as usual.
    """

    def __init__(self, cur: aiomysql.Cursor) -> None:
        self._cur = cur
        self._started = False
        self._tail: tuple[str, Sequence[Any]] | None = None

    @property
    def rowcount(self) -> int:
        """Rows the last statement matched."""
        return int(self._cur.rowcount)

    async def execute(self, statement: str, params: Sequence[Any] | None = None) -> None:
        """Run ``statement`` inside the transaction (opening it with this round trip)."""
        if self._started:
            await self._cur.execute(statement, params)
            return
        self._started = True
        await self._cur.execute(f"START TRANSACTION; {statement}", params)
        await self._cur.nextset()

    async def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run ``statement`` once per row (one multi-row INSERT where it can)."""
        if not self._started:
            self._started = True
            await self._cur.execute("START TRANSACTION")
        await self._cur.executemany(statement, rows)

    async def fetchall(self) -> Sequence[Any]:
        """Rows of the last statement."""
        return await self._cur.fetchall()

    async def fetchone(self) -> Any:
        """Next row of the last statement."""
        return await self._cur.fetchone()

    def then_commit(self, statement: str, params: Sequence[Any]) -> None:
        """Run ``statement`` last, in the same round trip as the COMMIT."""
        self._tail = (statement, params)

    async def commit(self) -> None:
        """Send the deferred statement (if any) and COMMIT; nothing when nothing ran."""
        if self._tail is not None:
            statement, params = self._tail
            if not self._started:
                statement = f"START TRANSACTION; {statement}"
            await self._cur.execute(f"{statement}; COMMIT", params)
            while await self._cur.nextset():
                pass
        elif self._started:
            await self._cur.execute("COMMIT")


Cursor = aiomysql.Cursor | TransactionCursor


def _abandon(pool: aiomysql.Pool) -> None:
    """Let go of a pool whose event loop is gone (or elsewhere), without that loop.

    Its loop cannot run the transports' close any more; each connection forgets its transport,
    whose own finalizer closes the socket, so that the connection's finalizer does not try the
    dead loop again.
    """
    for conn in [*getattr(pool, "_free", ()), *getattr(pool, "_used", ())]:
        with contextlib.suppress(Exception):
            conn.close()
        conn._writer = None
        conn._reader = None


def error_code(error: BaseException) -> int | None:
    args = getattr(error, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def discard_if_broken(conn: aiomysql.Connection, error: BaseException) -> None:
    # A connection cancelled mid-query or cut off (client error codes are 2000-2999) is in an
    # unknown state: close it so the pool drops it instead of handing it to the next caller.
    code = error_code(error)
    if isinstance(error, (asyncio.CancelledError, OSError, aiomysql.InterfaceError)) or (
        isinstance(error, aiomysql.OperationalError) and code is not None and code >= 2000
    ):
        conn.close()


async def rollback(conn: aiomysql.Connection, error: BaseException) -> None:
    if isinstance(error, asyncio.CancelledError) or conn.closed:
        conn.close()
        return
    try:
        await conn.rollback()
    except Exception:
        conn.close()
    else:
        discard_if_broken(conn, error)
