"""What every SQL dialect shares: the schema version and the row <-> ``JobRecord`` mapping.

A job row holds one column per ``JobRecord`` field, so reservation can filter and order on
``queue``, ``priority``, ``available_at`` and ``reserved_until`` with indexes, and a person can read
a row with any SQL client. ``payload`` and ``meta`` are JSON text (or a JSON column type where the
dialect has one). Failed rows have the same columns plus ``failed_at``.

Each dialect also adds a push-order column (an auto-increment ``seq``) that is not part of the
record, and records ``SCHEMA_VERSION`` in ``SCHEMA_TABLE`` so a later release can migrate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ... import codec
from ...errors import CorruptStoreError
from ...record import RECORD_VERSION, JobRecord

__all__ = [
    "FAILED_COLUMNS",
    "JOB_COLUMNS",
    "SCHEMA_TABLE",
    "SCHEMA_VERSION",
    "failed_select",
    "record_from_row",
    "record_to_row",
    "retry_select",
    "row_source",
]

#: The table that holds one row per queuekit table: ``(table_name, version)``.
SCHEMA_TABLE = "queuekit_schema"
#: Version of the layout below; bump it with a migration when a column changes.
SCHEMA_VERSION = 1

#: Columns of the jobs table, in the order ``record_to_row`` writes and ``record_from_row`` reads.
JOB_COLUMNS: tuple[str, ...] = (
    "id",
    "job_name",
    "payload",
    "queue",
    "priority",
    "attempts",
    "max_retries",
    "timeout",
    "created_at",
    "available_at",
    "reserved_until",
    "lease_token",
    "unique_key",
    "last_error",
    "meta",
)
#: Columns of the failed table: the job columns and when it failed.
FAILED_COLUMNS: tuple[str, ...] = (*JOB_COLUMNS, "failed_at")


def _select_list(replaced: dict[str, str]) -> str:
    return ", ".join(replaced.get(c, c) for c in JOB_COLUMNS)


def failed_select(error: str) -> str:
    """The ``SELECT`` list that copies a job row into the failed table, ``JOB_COLUMNS`` order.

    The lease is cleared and ``last_error`` becomes ``error`` (a dialect's placeholder).
    """
    return _select_list({"reserved_until": "NULL", "lease_token": "NULL", "last_error": error})


def retry_select(available_at: str) -> str:
    """The ``SELECT`` list that puts a failed row back as new, ``JOB_COLUMNS`` order.

    Attempts 0, due at ``available_at`` (a dialect's placeholder), no lease; ``last_error`` is
    kept for the record.
    """
    return _select_list(
        {
            "attempts": "0",
            "available_at": available_at,
            "reserved_until": "NULL",
            "lease_token": "NULL",
        }
    )


_PAYLOAD = JOB_COLUMNS.index("payload")
_META = JOB_COLUMNS.index("meta")


def _json_text(value: Any) -> str:
    return "{}" if value == {} else codec.dumps(value)


def record_to_row(record: JobRecord, *, failed: bool = False) -> tuple[Any, ...]:
    """The record as a row in ``JOB_COLUMNS`` order (``FAILED_COLUMNS`` when ``failed``).

    Raises ``PayloadError`` naming the record when its payload or meta is not JSON.
    """
    try:
        payload, meta = _json_text(record.payload), _json_text(record.meta)
    except (TypeError, ValueError) as e:
        raise record.unstorable(e) from e
    row = (
        record.id,
        record.job_name,
        payload,
        record.queue,
        record.priority,
        record.attempts,
        record.max_retries,
        record.timeout,
        record.created_at,
        record.available_at,
        record.reserved_until,
        record.lease_token,
        record.unique_key,
        record.last_error,
        meta,
    )
    return (*row, record.failed_at) if failed else row


def row_source(table: str, row_id: Any) -> str:
    """How errors name a row: ``table 'queue_jobs' row '0190...'``."""
    return f"table {table!r} row {row_id!r}"


def _json_column(value: Any, name: str, source: str) -> Any:
    if value == "{}":
        return {}  # the common empty meta: no parser needed
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return value  # a dialect's JSON column type already decoded it
    try:
        return codec.loads(value)
    except ValueError as e:
        raise CorruptStoreError(f"{source}: column {name!r} is not valid JSON ({e})") from e


def record_from_row(row: Sequence[Any], table: str, *, failed: bool = False) -> JobRecord:
    """Rebuild a record from a row in ``JOB_COLUMNS`` (or ``FAILED_COLUMNS``) order.

    Raises ``CorruptStoreError`` naming the table, the row id and the column at fault.
    """
    source = row_source(table, row[0])
    data = dict(zip(FAILED_COLUMNS if failed else JOB_COLUMNS, row, strict=True))
    data["payload"] = _json_column(row[_PAYLOAD], "payload", source)
    data["meta"] = _json_column(row[_META], "meta", source)
    if not failed:
        data["failed_at"] = None
    data["v"] = RECORD_VERSION
    return JobRecord.from_json(data, source=source)
