"""``MySQLStatements``: every SQL statement of the MySQL/MariaDB dialect, by name.

The driver (``mysql.py``) decides when each runs and in which transaction; this module says what
each statement does and what it guarantees. The statements MySQL writes exactly as SQLite does
(settling a lease, failed jobs) are in ``seq_statements``; the rest are here. Sessions run at
READ COMMITTED (set when a pooled connection opens): a reservation then locks only the rows it
takes, never the gaps between them, so dispatching never waits for a worker.
"""

from __future__ import annotations

from .schema import JOB_COLUMNS, SCHEMA_TABLE
from .seq_statements import SeqStatements

__all__ = ["MySQLStatements"]

_JOB_COLUMN_TYPES = (
    "id VARCHAR(64) NOT NULL",
    "job_name VARCHAR(255) NOT NULL",
    # LONGTEXT, not JSON: MySQL's JSON type rewrites the text; the payload is kept as written.
    "payload LONGTEXT NOT NULL",
    "queue VARCHAR(255) NOT NULL",
    "priority INT NOT NULL",
    "attempts INT NOT NULL",
    "max_retries INT NOT NULL",
    "timeout DOUBLE NULL",
    "created_at DOUBLE NOT NULL",
    "available_at DOUBLE NOT NULL",
    "reserved_until DOUBLE NULL",
    "lease_token VARCHAR(64) NULL",
    "unique_key VARCHAR(255) NULL",
    "last_error LONGTEXT NULL",
    "meta LONGTEXT NOT NULL",
)
_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"


class MySQLStatements(SeqStatements):
    """The statements for one pair of tables in database ``database``.

    Those it writes as SQLite does (settling a lease, failed jobs) come from ``SeqStatements``.
    """

    def __init__(self, database: str, table: str, failed_table: str) -> None:
        t = f"`{database}`.`{table}`"
        f = f"`{database}`.`{failed_table}`"
        schema = f"`{database}`.`{SCHEMA_TABLE}`"
        super().__init__(t, f, schema, "%s")
        cols = ", ".join(JOB_COLUMNS)
        column_types = ", ".join(_JOB_COLUMN_TYPES)
        #: (table name, CREATE statement); only missing tables are created, so a restart
        #: does not draw an "already exists" note from the server.
        self.create = (
            (
                SCHEMA_TABLE,
                f"CREATE TABLE IF NOT EXISTS {schema} ("
                "table_name VARCHAR(64) NOT NULL PRIMARY KEY, version INT NOT NULL, "
                f"installed_at DOUBLE NOT NULL) {_TABLE_OPTIONS}",
            ),
            # seq is the push order. The reservation indexes include leased rows: taking or
            # renewing a lease changes no indexed column, so it writes no index entry.
            # Pending and running jobs are exactly this table's rows, so a unique index here is
            # the UNIQUE guarantee (NULLs never collide); failed rows live elsewhere.
            (
                table,
                f"CREATE TABLE IF NOT EXISTS {t} ("
                f"seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, {column_types}, "
                "KEY qk_order (priority DESC, available_at, seq), "
                "KEY qk_queue_order (queue, priority DESC, available_at, seq), "
                f"UNIQUE KEY qk_unique (unique_key)) {_TABLE_OPTIONS}",
            ),
            (
                failed_table,
                f"CREATE TABLE IF NOT EXISTS {f} ("
                f"seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, {column_types}, "
                "failed_at DOUBLE NOT NULL, KEY qk_id (id), KEY qk_failed_order (failed_at, seq), "
                f"KEY qk_failed_queue (queue)) {_TABLE_OPTIONS}",
            ),
        )
        # Keeps the first install's row (INSERT IGNORE would do too, with a warning each time).
        self.record_version = (
            f"INSERT INTO {schema} (table_name, version, installed_at) VALUES (%s, %s, %s) "
            "ON DUPLICATE KEY UPDATE table_name = table_name"
        )
        self.existing_tables = (
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = %s AND table_name IN (%s, %s, %s)"
        )
        self.forget_version = f"DELETE FROM {schema} WHERE table_name IN (%s, %s)"
        self.drop = (f"DROP TABLE IF EXISTS {t}", f"DROP TABLE IF EXISTS {f}")

        # Reservation, step 1: lock the first due rows in order that are free or whose lease ran
        # out (their holder died: taking them over is the reclaim). SKIP LOCKED passes over rows
        # another reservation is taking right now instead of queueing behind it.
        due = "available_at <= %s AND (reserved_until IS NULL OR reserved_until <= %s)"
        order = "ORDER BY priority DESC, available_at, seq LIMIT %s FOR UPDATE SKIP LOCKED"
        self.take_any = f"SELECT seq, {cols} FROM {t} FORCE INDEX (qk_order) WHERE {due} {order}"
        self.take_queue = (
            f"SELECT seq, {cols} FROM {t} FORCE INDEX (qk_queue_order) "
            f"WHERE queue = %s AND {due} {order}"
        )
        # Reservation, step 2 (``lease(n)``): lease the locked rows, counting the attempt, each
        # with its own "seq.random" token (the seq lets settling find the row by primary key).
        self._lease_head = f"UPDATE {t} SET attempts = attempts + 1, reserved_until = %s, "

        # fail() copies the held row, then deletes it under the fence, and rolls back when the
        # delete matched nothing (the copy read a lease lost meanwhile).
        self.stats = (
            # A lease that ran out counts as pending: the next reservation takes the job back.
            # Parameters: now, five times.
            "SELECT queue, "
            "CAST(COALESCE(SUM(COALESCE(reserved_until <= %s, 1) AND available_at <= %s), 0) "
            "AS SIGNED), "
            "CAST(COALESCE(SUM(COALESCE(reserved_until <= %s, 1) AND available_at > %s), 0) "
            "AS SIGNED), "
            "CAST(COALESCE(SUM(COALESCE(reserved_until > %s, 0)), 0) AS SIGNED) "
            f"FROM {t} GROUP BY queue"
        )
        # retry_failed(): lock the chosen failed rows first, so two processes retrying at once
        # cannot both copy one row (READ COMMITTED reads after the lock see the other's delete).
        self.lock_failed_all = f"SELECT seq FROM {f} ORDER BY failed_at, seq FOR UPDATE"
        self._lock_failed_head = f"SELECT seq FROM {f} WHERE id IN "
        self._forget_head = f"DELETE FROM {f} WHERE id IN "
        self._complete_head = f"DELETE FROM {t} WHERE seq IN "
        self._lock_held_head = f"SELECT seq, lease_token FROM {t} WHERE seq IN "

    def lease(self, n: int) -> str:
        """Lease ``n`` locked rows; parameters: until, then (seq, token) pairs, then the seqs."""
        cases = " ".join("WHEN %s THEN %s" for _ in range(n))
        return (
            f"{self._lease_head}lease_token = CASE seq {cases} END "
            f"WHERE seq IN ({', '.join('%s' for _ in range(n))})"
        )

    def lock_failed(self, n: int) -> str:
        """Lock the failed rows of ``n`` job ids, oldest failure first."""
        return (
            f"{self._lock_failed_head}({', '.join('%s' for _ in range(n))}) "
            "ORDER BY failed_at, seq FOR UPDATE"
        )

    def forget(self, n: int) -> str:
        """Delete the failed rows of ``n`` job ids."""
        return f"{self._forget_head}({', '.join('%s' for _ in range(n))})"

    def complete_many(self, n: int) -> str:
        """Delete ``n`` held rows: parameters are the seqs, then the tokens.

        A token starts with its row's seq, so a row matches only its own token.
        """
        marks = ", ".join("%s" for _ in range(n))
        return f"{self._complete_head}({marks}) AND lease_token IN ({marks})"

    def lock_held(self, n: int) -> str:
        """Lock ``n`` job rows by seq and read their current tokens."""
        return f"{self._lock_held_head}({', '.join('%s' for _ in range(n))}) FOR UPDATE"
