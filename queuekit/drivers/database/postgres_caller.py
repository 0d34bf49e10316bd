"""Pushes of the PostgreSQL dialect on the caller's own psycopg connection (``connection=``).

The job is written inside the caller's open transaction, so it exists if and only if that
transaction commits; its NOTIFY is transactional too, so nobody wakes for a rolled-back job. A
blocking ``psycopg.Connection`` is driven from a thread, so that it never stalls the event loop.
A batch is encoded whole before anything is sent: a payload that cannot be stored raises before
the caller's transaction has seen a statement of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import psycopg

from ...errors import DriverError
from .postgres_copy import copy_rows, copy_rows_sync
from .postgres_sql import PostgresStatements

__all__ = ["CallerWrites", "own_transaction"]


def own_transaction(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether a batch on the caller's ``conn`` goes in a ``transaction()`` block of its own.

    Inside an open transaction that block is a savepoint, so a refused batch does not abort the
    caller's transaction; in autocommit it makes the batch atomic. A non-autocommit connection
    with no transaction yet must not get one: psycopg would COMMIT it at the end of the block,
    while the caller's first statement (ours) should open the caller's transaction.
    """
    return conn.autocommit or conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


def _wrong_connection(connection: object) -> TypeError:
    return TypeError(
        "connection= must be a psycopg Connection or AsyncConnection with an open "
        f"transaction on the queue's database, got {type(connection).__name__}"
    )


class CallerWrites:
    """Writes jobs through connections the caller owns (see the module docstring).

    ``where`` starts every error message; ``channel`` is the NOTIFY channel of the jobs table.
    """

    def __init__(self, sql: PostgresStatements, channel: str, where: str) -> None:
        self._sql = sql
        self._channel = channel
        self._where = where

    async def push(self, connection: Any, query: bytes, params: Mapping[str, Any]) -> int:
        """Run a push statement on the caller's connection; returns its row count."""
        try:
            if isinstance(connection, psycopg.AsyncConnection):
                cur = await connection.execute(query, params)
                return cur.rowcount
            if isinstance(connection, psycopg.Connection):
                return await asyncio.to_thread(_execute_sync, connection, query, params)
        except psycopg.Error as e:
            raise DriverError(f"{self._where}: push on the caller's connection failed: {e}") from e
        raise _wrong_connection(connection)

    async def push_many(self, connection: Any, rows: list[tuple[Any, ...]], due: list[str]) -> None:
        """COPY ``rows`` and NOTIFY the ``due`` queues on the caller's connection.

        Under a savepoint where the caller's transaction is open, so that a refused batch does
        not abort the caller's whole transaction (see ``own_transaction``).
        """
        try:
            if isinstance(connection, psycopg.AsyncConnection):
                if own_transaction(connection):
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
        raise _wrong_connection(connection)

    async def _copy_notify(
        self, conn: psycopg.AsyncConnection[Any], rows: list[tuple[Any, ...]], due: list[str]
    ) -> None:
        await copy_rows(conn, self._sql.copy_jobs, rows)
        if due:
            await conn.execute(self._sql.notify_queues, {"channel": self._channel, "queues": due})

    def _copy_notify_sync(
        self, conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]], due: list[str]
    ) -> None:
        scope = conn.transaction() if own_transaction(conn) else contextlib.nullcontext()
        with scope:
            copy_rows_sync(conn, self._sql.copy_jobs, rows)
            if due:
                conn.execute(self._sql.notify_queues, {"channel": self._channel, "queues": due})


def _execute_sync(conn: psycopg.Connection[Any], query: bytes, params: Mapping[str, Any]) -> int:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.rowcount
