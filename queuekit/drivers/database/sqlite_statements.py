"""``SQLiteStatements``: every SQL statement of the SQLite dialect, by name.

The driver (``sqlite.py``) decides when each runs and in which transaction; this module says what
each statement does to which table and what it guarantees. The statements SQLite writes exactly
as MySQL does (settling a lease, failed jobs) are in ``seq_statements``; the rest are here.
"""

from __future__ import annotations

from .schema import JOB_COLUMNS, SCHEMA_TABLE
from .seq_statements import SeqStatements

__all__ = ["SQLiteStatements"]

# The jobs table's columns after ``seq`` (the failed table adds ``failed_at``).
_JOB_COLUMN_TYPES = (
    "id TEXT NOT NULL, job_name TEXT NOT NULL, payload TEXT NOT NULL, queue TEXT NOT NULL, "
    "priority INTEGER NOT NULL, attempts INTEGER NOT NULL, max_retries INTEGER NOT NULL, "
    "timeout REAL, created_at REAL NOT NULL, available_at REAL NOT NULL, "
    "reserved_until REAL, lease_token TEXT, unique_key TEXT, last_error TEXT, "
    "meta TEXT NOT NULL"
)


class SQLiteStatements(SeqStatements):
    """Every SQL statement of the SQLite dialect, named, for one pair of tables.

    Each runs inside the transaction its caller opens; the comment says what it guarantees.
    Those it writes as MySQL does (settling a lease, failed jobs) come from ``SeqStatements``.
    """

    def __init__(self, table: str, failed_table: str) -> None:
        t, f = table, failed_table
        super().__init__(t, f, SCHEMA_TABLE, "?")
        cols = ", ".join(JOB_COLUMNS)
        self.create = (
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (table_name TEXT PRIMARY KEY, "
            "version INTEGER NOT NULL, installed_at REAL NOT NULL)",
            # seq is the rowid: a new row always gets more than every row present, so it is
            # the push order. Rows are found by seq (it leads the lease token), so ``id`` needs
            # no index of its own: one index less to write per job.
            f"CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY, {_JOB_COLUMN_TYPES})",
            # Reservation order. Leased rows stay in these indexes (a lease changes no indexed
            # column, so taking and renewing one writes no index); a reservation steps over the
            # few leased rows at the head, and finds expired ones there, in order. It also steps
            # over delayed rows of a higher priority than the first due one: cheap while delayed
            # jobs are few or share the due jobs' priority (they then sort after them).
            f"CREATE INDEX IF NOT EXISTS {t}_order ON {t} (priority DESC, available_at, seq)",
            f"CREATE INDEX IF NOT EXISTS {t}_queue_order ON {t} "
            "(queue, priority DESC, available_at, seq)",
            # Pending and running jobs are exactly the rows of this table, so a unique index
            # here is the UNIQUE guarantee; failed rows live elsewhere and free their key.
            f"CREATE UNIQUE INDEX IF NOT EXISTS {t}_unique ON {t} (unique_key) "
            "WHERE unique_key IS NOT NULL",
            # A failed row keeps its own seq so a job failed twice never collides with itself.
            f"CREATE TABLE IF NOT EXISTS {f} (seq INTEGER PRIMARY KEY, {_JOB_COLUMN_TYPES}, "
            "failed_at REAL NOT NULL)",
            f"CREATE INDEX IF NOT EXISTS {f}_id ON {f} (id)",
            f"CREATE INDEX IF NOT EXISTS {f}_order ON {f} (failed_at, seq)",
        )
        self.record_version = (
            f"INSERT OR IGNORE INTO {SCHEMA_TABLE} (table_name, version, installed_at) "
            "VALUES (?, ?, ?)"
        )
        # Reservation: lease the first due rows in order that are free or whose lease ran out
        # (their holder died: taking them over is the reclaim), counting the attempt. The new
        # token is "seq.random": a fresh random part fences off every earlier holder, and the
        # seq prefix lets settling find the row by its primary key. Runs under BEGIN IMMEDIATE,
        # so no other connection can read the same rows as free in between.
        returning = f"RETURNING seq, {cols}"
        lease = (
            f"UPDATE {t} SET attempts = attempts + 1, reserved_until = :until, "
            "lease_token = seq || '.' || lower(hex(randomblob(8))) WHERE seq"
        )
        due = "available_at <= :now AND (reserved_until IS NULL OR reserved_until <= :now)"
        first_any = (
            f"(SELECT seq FROM {t} INDEXED BY {t}_order WHERE {due} "
            "ORDER BY priority DESC, available_at, seq LIMIT :limit)"
        )
        first_of_queue = (
            f"(SELECT seq FROM {t} INDEXED BY {t}_queue_order WHERE queue = :queue "
            f"AND {due} ORDER BY priority DESC, available_at, seq LIMIT :limit)"
        )
        self.take_any = f"{lease} IN {first_any} {returning}"
        self.take_queue = f"{lease} IN {first_of_queue} {returning}"
        # The same for one job (:limit = 1): a scalar subquery spares SQLite the temporary
        # table that IN (...) builds, the cheaper plan for a worker taking one job at a time.
        self.take_one_any = f"{lease} = {first_any} {returning}"
        self.take_one_queue = f"{lease} = {first_of_queue} {returning}"
        # Hands a row leased in this transaction back untouched (used when a batch is refused).
        self.unlease = (
            f"UPDATE {t} SET attempts = attempts - 1, reserved_until = NULL, lease_token = NULL "
            "WHERE seq = ?"
        )
        self.stats = (
            # A lease that ran out counts as pending: the next reservation takes the job back.
            # Parameters: now, five times.
            "SELECT queue, "
            "sum(coalesce(reserved_until <= ?, 1) AND available_at <= ?), "
            "sum(coalesce(reserved_until <= ?, 1) AND available_at > ?), "
            f"sum(coalesce(reserved_until > ?, 0)) FROM {t} GROUP BY queue"
        )
        self.failed_seqs = f"SELECT seq FROM {f} ORDER BY failed_at, seq"
        self.failed_seqs_of = f"SELECT seq FROM {f} WHERE id = ? ORDER BY seq"
        self.forget_id = f"DELETE FROM {f} WHERE id = ?"
