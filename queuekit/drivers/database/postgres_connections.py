"""``PostgresConnections``: the connection pool and the pipelined session of one driver.

Every statement of the PostgreSQL dialect runs through one of them: the frequent ones on the
pipelined session (see ``postgres_pipeline``), the rest on a pooled connection in autocommit.
Whichever it is, a psycopg or socket error comes back as a ``DriverError`` that names the server
(password hidden), the table and the action that failed, with psycopg's error as its cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from ...errors import DriverError
from .options import DatabaseOptions
from .postgres_pipeline import PipelinedSession, Statement

__all__ = ["PostgresConnections", "conninfo", "redact"]


def conninfo(url: str) -> str:
    """The libpq URI of ``url``: ``postgresql+psycopg://`` and friends lose their driver suffix."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def redact(url: str) -> str:
    """``url`` with its password hidden, for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class PostgresConnections:
    """The pool and the pipelined session of one driver; ``open`` before use, ``close`` after.

    ``where`` starts every error message (``PostgreSQL postgresql://... table 'queue_jobs'``).
    ``connect_kwargs`` are psycopg's ``connect`` arguments for every connection (autocommit,
    application_name, connect_timeout).

    Example::

        connections = PostgresConnections(options, where, {"autocommit": True})
        await connections.open()
        count = await connections.execute("purge", query, {"queue": "default"})
    """

    def __init__(
        self, options: DatabaseOptions, where: str, connect_kwargs: Mapping[str, Any]
    ) -> None:
        self.options = options
        self.where = where
        self.conninfo = conninfo(options.url)
        self.connect_kwargs = dict(connect_kwargs)
        self._pool: AsyncConnectionPool | None = None
        self._session: PipelinedSession | None = None
        self._name = "queuekit"
        # Both belong to the event loop that opened them; used from another loop (a later
        # asyncio.run), each is opened anew on it (see session() and _live_pool()).
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None

    async def open(self, name: str) -> None:
        """Open the pool (one connection at once, the others when needed); idempotent.

        The pipelined session opens its first connection with its first statement.
        """
        if self._pool is not None:
            return
        self._name = name
        self._pool = await self._open_pool()
        self._session = PipelinedSession(
            self.conninfo, self.connect_kwargs, size=self.options.pool_size
        )
        self._session_loop = self._pool_loop = asyncio.get_running_loop()

    async def _open_pool(self) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self.options.pool_size,
            kwargs=self.connect_kwargs,
            timeout=self.options.connect_timeout,
            name=self._name,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=self.options.connect_timeout)
        except Exception as e:
            await pool.close()
            raise DriverError(f"{self.where}: cannot connect: {e}") from e
        return pool

    @property
    def is_open(self) -> bool:
        """Whether ``open`` succeeded and ``close`` has not run since."""
        return self._pool is not None

    async def close(self) -> None:
        """Close the session and the pool; statements in flight fail. Idempotent."""
        loop = asyncio.get_running_loop()
        if self._session is not None:
            session, self._session = self._session, None
            if self._session_loop is loop:
                await session.close()
            else:
                session.abandon()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            if self._pool_loop is loop:
                await pool.close()
            else:
                _abandon_pool(pool)

    def failure(self, action: str, error: BaseException) -> DriverError:
        """The ``DriverError`` reporting that ``action`` failed with ``error``."""
        return DriverError(f"{self.where}: {action} failed: {error}")

    def _not_connected(self) -> DriverError:
        return DriverError(f"{self.where}: the driver is not connected (call connect())")

    def session(self) -> PipelinedSession:
        """The pipelined session; its errors are psycopg's, for the caller to translate."""
        session = self._session
        if session is None:
            raise self._not_connected()
        loop = asyncio.get_running_loop()
        if self._session_loop is not loop:
            session.abandon()
            session = self._session = PipelinedSession(
                self.conninfo, self.connect_kwargs, size=self.options.pool_size
            )
            self._session_loop = loop
        return session

    async def _live_pool(self) -> AsyncConnectionPool:
        pool = self._pool
        if pool is None:
            raise self._not_connected()
        loop = asyncio.get_running_loop()
        if self._pool_loop is not loop:
            self._pool = None
            _abandon_pool(pool)
            pool = self._pool = await self._open_pool()
            self._pool_loop = loop
        return pool

    @contextlib.asynccontextmanager
    async def connection(self, action: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection in autocommit, for a statement that needs one to itself."""
        try:
            async with (await self._live_pool()).connection() as conn:
                yield conn
        except (psycopg.Error, OSError) as e:
            raise self.failure(action, e) from e

    # execute and fetch open no context-manager generator per call: they run often enough.

    async def execute(self, action: str, query: bytes, params: Mapping[str, Any]) -> int:
        """Run one statement on a pooled connection; returns its row count."""
        try:
            async with (await self._live_pool()).connection() as conn:
                cur = await conn.execute(query, params)
                return cur.rowcount
        except (psycopg.Error, OSError) as e:
            raise self.failure(action, e) from e

    async def fetch(
        self, action: str, query: bytes, params: Mapping[str, Any]
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a pooled connection; returns its rows."""
        try:
            async with (await self._live_pool()).connection() as conn:
                cur = await conn.execute(query, params)
                return await cur.fetchall()
        except (psycopg.Error, OSError) as e:
            raise self.failure(action, e) from e

    async def run(self, action: str, statement: Statement, args: Sequence[Any]) -> int:
        """Run one statement on the pipelined session; returns its row count."""
        try:
            return await self.session().execute(statement, args)
        except (psycopg.Error, OSError) as e:
            raise self.failure(action, e) from e

    async def run_fetch(
        self,
        action: str,
        statement: Statement,
        args: Sequence[Any],
        orphaned: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run one statement on the pipelined session; returns its rows.

        ``orphaned`` gets the rows when the caller is cancelled before they arrive.
        """
        try:
            return await self.session().fetch(statement, args, orphaned=orphaned)
        except (psycopg.Error, OSError) as e:
            raise self.failure(action, e) from e


def _abandon_pool(pool: AsyncConnectionPool) -> None:
    """Let go of a pool whose event loop is gone: its idle connections are closed by libpq
    directly (the loop cannot run psycopg's close any more); its tasks went with the loop."""
    for conn in list(getattr(pool, "_pool", ())):
        with contextlib.suppress(Exception):
            conn.pgconn.finish()
