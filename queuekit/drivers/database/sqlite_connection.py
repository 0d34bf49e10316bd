"""The SQLite connection of ``SQLiteDriver``: URL parsing, opening, schema, caller's connection.

Everything here runs on the thread that owns the connection (the driver's connection thread, or
the caller's thread for a write inside the caller's own transaction).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ...clock import now
from ...errors import ConfigError, DriverError
from .options import url_options
from .schema import SCHEMA_VERSION
from .sqlite_statements import SQLiteStatements

__all__ = [
    "SYNCHRONOUS",
    "begin_as_python_would",
    "changed_rows",
    "check_same_file",
    "close_connection",
    "create_schema",
    "fetch_all",
    "open_connection",
    "parse_url",
]

SYNCHRONOUS = ("off", "normal", "full", "extra")


def parse_url(url: str) -> tuple[str, str]:
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
    query = url_options(parts.query, "SQLite", ("synchronous",))
    synchronous = query.get("synchronous", ["normal"])[-1].lower()
    if synchronous not in SYNCHRONOUS:
        raise ConfigError(
            f"queue.database.url: synchronous must be one of {', '.join(SYNCHRONOUS)}, "
            f"got {synchronous!r}"
        )
    return path, synchronous


def open_connection(path: str, synchronous: str, timeout: float) -> sqlite3.Connection:
    """Open ``path`` in WAL mode (creating its folder), each transaction opened explicitly."""
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    conn = sqlite3.connect(
        path,
        timeout=timeout,
        isolation_level=None,  # the driver opens every transaction itself
        check_same_thread=True,
    )
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    except BaseException:
        conn.close()
        raise
    return conn


def create_schema(
    conn: sqlite3.Connection, sql: SQLiteStatements, tables: Sequence[str], path: str
) -> None:
    """Create the tables and indexes if missing; record (or check) each table's version."""
    # IMMEDIATE: processes starting together create the tables one after the other.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in sql.create:
            conn.execute(statement)
        for table in tables:
            row = conn.execute(sql.schema_version, (table,)).fetchone()
            if row is not None and row[0] > SCHEMA_VERSION:
                raise DriverError(
                    f"SQLite queue {path!r}: table {table!r} has schema version {row[0]}, newer "
                    f"than this release reads ({SCHEMA_VERSION}); upgrade queuekit"
                )
            conn.execute(sql.record_version, (table, SCHEMA_VERSION, now()))
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def check_same_file(conn: sqlite3.Connection, path: str, real_path: str | None) -> None:
    """Raise ``DriverError`` unless ``conn`` is open on the queue's file (``real_path``)."""
    files = {row[1]: row[2] for row in conn.execute("PRAGMA database_list")}
    main = files.get("main") or ""
    if real_path is None:
        raise DriverError(f"SQLite queue {path!r}: the driver is not connected")
    if not main or os.path.realpath(main) != real_path:
        raise DriverError(
            f"SQLite queue {path!r}: the connection passed as connection= is open on "
            f"{main or 'an in-memory database'!r}, not on the queue's file"
        )


def changed_rows(conn: sqlite3.Connection, statement: str, params: Sequence[Any]) -> int:
    """Run one write statement; how many rows it changed."""
    return conn.execute(statement, params).rowcount


def fetch_all(conn: sqlite3.Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    """Run one query; all its rows."""
    return conn.execute(statement, params).fetchall()


def close_connection(conn: sqlite3.Connection | None) -> None:
    """Close the thread's connection, if it was opened."""
    if conn is not None:
        conn.close()


def begin_as_python_would(conn: sqlite3.Connection) -> None:
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
