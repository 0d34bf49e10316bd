"""``SeqStatements``: the statements SQLite and MySQL write alike, once, for either placeholder.

Both dialects find a row by its ``seq`` (the lease token starts with it) and fence every change
to a leased row with ``seq AND lease_token``; the SQL differs only in the placeholder (``?`` or
``%s``) and in how a table is named. What differs (the tables and indexes, reserving, counting)
stays in ``sqlite_statements`` and ``mysql_statements``.
"""

from __future__ import annotations

from .schema import FAILED_COLUMNS, JOB_COLUMNS, failed_select, retry_select

__all__ = ["SeqStatements"]


class SeqStatements:
    """The shared statements for jobs table ``t``, failed table ``f`` and schema table ``schema``.

    ``t``, ``f`` and ``schema`` are spliced in as given (quoted already if the dialect wants it);
    ``m`` is the dialect's placeholder. Each runs inside the transaction its caller opens.
    """

    def __init__(self, t: str, f: str, schema: str, m: str) -> None:
        cols = ", ".join(JOB_COLUMNS)
        failed_cols = ", ".join(FAILED_COLUMNS)
        self.schema_version = f"SELECT version FROM {schema} WHERE table_name = {m}"
        self.insert = f"INSERT INTO {t} ({cols}) VALUES ({', '.join(m for _ in JOB_COLUMNS)})"
        # Every fenced statement matches seq AND lease_token: a holder whose lease was taken
        # over changes nothing.
        fence = f"WHERE seq = {m} AND lease_token = {m}"
        self.extend = f"UPDATE {t} SET reserved_until = {m} {fence}"
        self.complete = f"DELETE FROM {t} {fence}"
        self.release = (
            f"UPDATE {t} SET attempts = {m}, last_error = COALESCE({m}, last_error), "
            f"available_at = {m}, reserved_until = NULL, lease_token = NULL {fence}"
        )
        # fail() and quarantine: copy a job row into the failed table (parameters: error,
        # failed_at, then the row); the caller deletes it after, in the same transaction.
        copy = f"INSERT INTO {f} ({failed_cols}) SELECT {failed_select(m)}, {m} FROM {t}"
        self.copy_to_failed = f"{copy} {fence}"
        self.quarantine = f"{copy} WHERE seq = {m}"
        self.delete_seq = f"DELETE FROM {t} WHERE seq = {m}"
        self.failed_stats = f"SELECT queue, COUNT(*) FROM {f} GROUP BY queue"
        self.failed_list = f"SELECT {failed_cols} FROM {f} ORDER BY failed_at, seq LIMIT {m}"
        self.failed_list_queue = (
            f"SELECT {failed_cols} FROM {f} WHERE queue = {m} ORDER BY failed_at, seq LIMIT {m}"
        )
        # Back as new: attempts 0, due now, no lease; last_error is kept for the record.
        self.retry = f"INSERT INTO {t} ({cols}) SELECT {retry_select(m)} FROM {f} WHERE seq = {m}"
        self.forget_seq = f"DELETE FROM {f} WHERE seq = {m}"
        self.forget_all = f"DELETE FROM {f}"
        # Pending and delayed jobs only: a running job's row stays for its worker to settle.
        self.purge = f"DELETE FROM {t} WHERE queue = {m} AND reserved_until IS NULL"
