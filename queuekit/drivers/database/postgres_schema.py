"""The tables, indexes and schema record of the PostgreSQL dialect, and ``create_schema``.

The statements are templates: ``PostgresStatements.render`` (in ``postgres_sql``) fills
``{jobs}``, ``{failed}`` and the index names with quoted identifiers. ``create_schema`` runs
``SCHEMA_LOCK``, then ``CREATE``, then records the layout version, all in one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import DriverError
from .schema import SCHEMA_TABLE, SCHEMA_VERSION

if TYPE_CHECKING:
    import psycopg

    from .postgres_sql import PostgresStatements

__all__ = ["CREATE", "READ_VERSION", "RECORD_VERSION", "SCHEMA_LOCK", "create_schema"]

# Concurrent ``CREATE TABLE IF NOT EXISTS`` from several workers starting at once can still fail
# with a duplicate pg_type row; one advisory lock per database serializes schema creation.
SCHEMA_LOCK = "SELECT pg_advisory_xact_lock(hashtext('queuekit.schema'))"

_CREATE_SCHEMA_TABLE = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (
    table_name text PRIMARY KEY,
    version integer NOT NULL
)"""

# The columns of a job, in both tables. Key columns use the "C" collation: byte comparison is
# faster and ids, queues and tokens have no linguistic order.
_JOB_COLUMN_TYPES = """
    id text COLLATE "C" PRIMARY KEY,
    job_name text NOT NULL,
    payload text NOT NULL,
    queue text COLLATE "C" NOT NULL,
    priority integer NOT NULL,
    attempts integer NOT NULL,
    max_retries integer NOT NULL,
    timeout double precision,
    created_at double precision NOT NULL,
    available_at double precision NOT NULL,
    reserved_until double precision,
    lease_token text COLLATE "C",
    unique_key text COLLATE "C",
    last_error text,
    meta text NOT NULL"""

# ``seq`` is the push order (ties after priority and available_at).
_CREATE_JOBS = f"""
CREATE TABLE IF NOT EXISTS {{jobs}} (
    seq bigint GENERATED ALWAYS AS IDENTITY,{_JOB_COLUMN_TYPES}
)"""

# The reservation order for one named queue, and across every queue. Neither index holds a
# column that reservation changes (attempts, reserved_until, lease_token), so a reservation can
# be a HOT update that writes no index entry.
_CREATE_PICK_INDEX = """
CREATE INDEX IF NOT EXISTS {pick_index} ON {jobs} (queue, priority DESC, available_at, seq)"""
_CREATE_PICK_ANY_INDEX = """
CREATE INDEX IF NOT EXISTS {pick_any_index} ON {jobs} (priority DESC, available_at, seq)"""

# UNIQUE: at most one pending, delayed or running job per unique_key. Finished jobs are deleted
# and failed ones moved out, so the key is free again exactly when the job leaves this table.
_CREATE_UNIQUE_INDEX = """
CREATE UNIQUE INDEX IF NOT EXISTS {unique_index} ON {jobs} (unique_key)
WHERE unique_key IS NOT NULL"""

_CREATE_FAILED = f"""
CREATE TABLE IF NOT EXISTS {{failed}} ({_JOB_COLUMN_TYPES},
    failed_at double precision NOT NULL
)"""

_CREATE_FAILED_INDEX = """
CREATE INDEX IF NOT EXISTS {failed_index} ON {failed} (failed_at, id)"""

#: Every table and index, in the order they are created.
CREATE: tuple[str, ...] = (
    _CREATE_SCHEMA_TABLE,
    _CREATE_JOBS,
    _CREATE_PICK_INDEX,
    _CREATE_PICK_ANY_INDEX,
    _CREATE_UNIQUE_INDEX,
    _CREATE_FAILED,
    _CREATE_FAILED_INDEX,
)

# The first release to create a table records its layout version; a later one migrates from it.
RECORD_VERSION = f"""
INSERT INTO {SCHEMA_TABLE} (table_name, version) VALUES (%(table)s, %(version)s)
ON CONFLICT (table_name) DO NOTHING
RETURNING version"""

READ_VERSION = f"SELECT version FROM {SCHEMA_TABLE} WHERE table_name = %(table)s"


async def create_schema(
    conn: psycopg.AsyncConnection[Any],
    sql: PostgresStatements,
    tables: Sequence[str],
    where: str,
) -> None:
    """Create the tables and indexes if missing; record (or check) each table's version."""
    async with conn.transaction():
        await conn.execute(sql.schema_lock)
        for statement in sql.create:
            await conn.execute(statement)
        for table in tables:
            params = {"table": table, "version": SCHEMA_VERSION}
            await conn.execute(sql.record_version, params)
            row = await (await conn.execute(sql.read_version, params)).fetchone()
            found = row[0] if row else None
            if found != SCHEMA_VERSION:
                raise DriverError(
                    f"{where}: table {table!r} has schema version {found!r}; this release "
                    f"reads version {SCHEMA_VERSION} (upgrade queuekit to use it)"
                )
