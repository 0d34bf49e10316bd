"""Every SQL statement of the PostgreSQL dialect, each with what it guarantees.

The statements are templates over the table names (``{jobs}``, ``{failed}``, index names), filled
once per driver by ``PostgresStatements.render`` with quoted identifiers. Values always travel as
``%(name)s`` parameters. Every statement runs as ONE statement in autocommit, so each is its own
transaction: one round trip, and atomic without a BEGIN/COMMIT exchange.

The frequent ones (``PostgresStatements.hot``) are also rendered as ``Statement`` objects with
``$n`` placeholders, for the driver's pipelined session (see ``postgres_pipeline``). They are the
statements that never wait for another transaction's lock: a unique job's INSERT can (an equal
key inserted by a transaction still open) and so goes through the pool.

Instants are float epoch seconds from the client's clock (as the records carry them), so the
hosts that share a queue keep their clocks in sync (NTP), as they must for ``available_at`` anyway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .postgres_pipeline import Statement
from .postgres_schema import CREATE, READ_VERSION, RECORD_VERSION, SCHEMA_LOCK
from .schema import FAILED_COLUMNS, JOB_COLUMNS, failed_select, retry_select

__all__ = ["COPY_TYPES", "HotStatements", "PostgresStatements", "channel_name"]

_COLUMNS = ", ".join(JOB_COLUMNS)
_FAILED_COLUMNS = ", ".join(FAILED_COLUMNS)
_VALUES = ", ".join(f"%({c})s" for c in JOB_COLUMNS)
_J_COLUMNS = ", ".join(f"j.{c}" for c in JOB_COLUMNS)

# Postgres element types of the arrays ``push_many`` sends, one per column of ``JOB_COLUMNS``.
_ARRAY_TYPES = {
    "priority": "integer",
    "attempts": "integer",
    "max_retries": "integer",
    "timeout": "double precision",
    "created_at": "double precision",
    "available_at": "double precision",
    "reserved_until": "double precision",
}
_UNNEST = ", ".join(f"%({c})s::{_ARRAY_TYPES.get(c, 'text')}[]" for c in JOB_COLUMNS)

#: Postgres types of ``JOB_COLUMNS`` as binary COPY sends them (psycopg names).
COPY_TYPES: tuple[str, ...] = tuple(
    {"integer": "int4", "double precision": "float8"}.get(_ARRAY_TYPES.get(c, "text"), "text")
    for c in JOB_COLUMNS
)

# -- pushing ------------------------------------------------------------------------------------

# One row, or none when a pending/running job holds the same unique_key (rowcount tells which).
PUSH = f"INSERT INTO {{jobs}} ({_COLUMNS}) VALUES ({_VALUES}) ON CONFLICT DO NOTHING"

# PUSH plus a NOTIFY that wakes idle workers, for a caller's transaction: NOTIFY is transactional,
# so it is sent only if that transaction commits and nobody wakes for a rolled-back job. Returns
# one row when the job was stored (RETURNING runs only for a stored row). The driver's own pushes
# notify after their commit instead (see NOTIFY_COMMITTED).
PUSH_NOTIFY = f"{PUSH} RETURNING pg_notify(%(channel)s, queue)"

# A job without a unique_key can collide only on its id, new at every dispatch: without ON CONFLICT
# the INSERT skips the speculative-insertion pass (several percent of its server time). A repeated
# id raises a unique violation in the statement's own transaction, which push reports as "not
# stored", as PUSH would. Only for the driver's own autocommit statements: in a caller's
# transaction an error would abort the caller's work.
INSERT_JOB = f"INSERT INTO {{jobs}} ({_COLUMNS}) VALUES ({_VALUES})"

# A small batch in one statement, so all rows commit or none do (a duplicate unique_key raises
# and stores nothing). ``unnest`` keeps array order, so ``seq`` follows the batch order.
PUSH_MANY = f"INSERT INTO {{jobs}} ({_COLUMNS}) SELECT * FROM unnest({_UNNEST})"

# A large batch streams through COPY: the fastest way in, in binary so that psycopg's C code encodes
# every value and the server parses none. One COPY is one statement, so in autocommit it is its own
# transaction: every row commits or none does (a duplicate unique_key fails it whole). COPY keeps
# row order, so ``seq`` follows the batch order.
COPY_JOBS = f"COPY {{jobs}} ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"

# The wake-ups of a batch written with COPY in a caller's transaction: sent only if that
# transaction commits.
NOTIFY_QUEUES = "SELECT pg_notify(%(channel)s, queue) FROM unnest(%(queues)s::text[]) AS queue"

# The wake-ups of jobs the driver's own statements (push, push_many, release) have committed, in
# a transaction of their own that follows the jobs' (see ``postgres_listen.CommitNotices``): a
# woken worker finds the rows. Not inside the jobs' transactions: a transaction that sends a
# NOTIFY holds a server-wide lock from its NOTIFY until its commit has reached the disk, so
# concurrent pushes that each notified committed one at a time, never flushed to disk together.
# This one commits without waiting for the disk, holding that lock only for an instant: a
# notification does not outlive a server crash anyway, and idle workers poll every
# poll_interval, so a lost wake-up costs at most that.
NOTIFY_COMMITTED = """
SELECT pg_notify(%(channel)s, queue)
FROM unnest(%(queues)s::text[]) AS queue
WHERE (SELECT set_config('synchronous_commit', 'off', true)) = 'off'"""

# -- reserving ----------------------------------------------------------------------------------

# Reservation in one statement and one round trip. A row is due when available_at has passed and
# it is not leased, or its lease ran out (the worker died): expired leases are reclaimed by the
# very statement that hands them out again, with the attempt counted. FOR UPDATE SKIP LOCKED lets
# concurrent reservers pass over each other's candidate rows instead of waiting or taking the same
# one; READ COMMITTED re-checks the WHERE clause on a row updated since the snapshot, so a row
# leased by another worker a moment ago is not taken again. ARRAY(...) runs the locking subquery
# exactly once (an InitPlan) and lets the UPDATE find the rows through the primary key instead of
# joining the whole table. RETURNING order is not guaranteed: ``seq`` lets the driver sort the
# batch back into reservation order.
_RESERVE = f"""
UPDATE {{{{jobs}}}} AS j
SET attempts = j.attempts + 1, reserved_until = %(until)s, lease_token = %(token)s
WHERE j.id = ANY(ARRAY(
    SELECT id FROM {{{{jobs}}}}
    WHERE {{where}}available_at <= %(now)s
      AND (reserved_until IS NULL OR reserved_until <= %(now)s)
    ORDER BY priority DESC, available_at, seq
    LIMIT {{limit}}
    FOR UPDATE SKIP LOCKED
))
RETURNING {_J_COLUMNS}, j.seq"""
RESERVE_QUEUE = _RESERVE.format(where="queue = %(queue)s AND ", limit="%(limit)s")
RESERVE_ANY = _RESERVE.format(where="", limit="%(limit)s")

# How the pipelined session plans reservations. Planning one costs the server about as much as
# running it, so a reservation across every queue for up to RESERVE_PREPARED_UP_TO jobs is a
# prepared statement with its limit written in: PostgreSQL soon keeps one generic plan for it, an
# ordered scan of the pick_any index stopped after the limit, the right plan for any table size
# and any instant (with ``LIMIT $n`` the generic plan is costed for a tenth of the table and never
# chosen). A reservation in named queues is planned afresh each time with the actual values: a
# generic plan cannot tell how common the queue is, and one that took it for rare sorted every due
# row of the queue (tens of milliseconds per reservation on a large table).
RESERVE_PREPARED_UP_TO = 64

# Undo the reservation of rows a reserve could not hand out (a batch that also held a corrupt
# row): the attempt is uncounted and the lease dropped, fenced by the token just given out.
UNRESERVE = """
UPDATE {jobs} SET attempts = attempts - 1, reserved_until = NULL, lease_token = NULL
WHERE id = ANY(%(ids)s) AND lease_token = %(token)s"""

# -- settling a lease (every statement fenced by id AND lease_token) ----------------------------

# A holder whose lease was reclaimed has a stale token and matches nothing.
EXTEND = """
UPDATE {jobs} SET reserved_until = %(until)s WHERE id = %(id)s AND lease_token = %(token)s"""

# Acknowledgements commit asynchronously (synchronous_commit off for this one transaction): the
# server answers before the WAL reaches disk. Only a crash of the database server itself within
# that moment (about 3 x wal_writer_delay) can undo an acknowledgement, and then the job is still
# leased to its finished worker, runs again once that lease runs out, and is acknowledged again:
# at-least-once delivery already allows that (a worker can always die between finishing a job and
# acknowledging it). Nothing pushed is ever lost this way, and no two workers run a job at once:
# pushes, reservations, extensions, releases and failures all commit synchronously. The next
# synchronous commit on the server flushes every earlier acknowledgement with it.
_ASYNC_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) = 'off'"

COMPLETE = f"""
DELETE FROM {{jobs}}
WHERE id = %(id)s AND lease_token = %(token)s AND {_ASYNC_COMMIT}"""

# Several acknowledgements in one statement; each row is fenced by its own (id, token) pair and
# RETURNING says which were still held.
COMPLETE_MANY = f"""
DELETE FROM {{jobs}} AS j
USING unnest(%(ids)s::text[], %(tokens)s::text[]) AS done(id, token)
WHERE j.id = done.id AND j.lease_token = done.token AND {_ASYNC_COMMIT}
RETURNING j.id"""

# Back to waiting, with the attempts the worker gives and its error (NULL keeps the last one).
RELEASE = """
UPDATE {jobs}
SET available_at = %(available_at)s, attempts = %(attempts)s,
    last_error = COALESCE(%(error)s, last_error), reserved_until = NULL, lease_token = NULL
WHERE id = %(id)s AND lease_token = %(token)s"""

# Move to the failed table in one statement: the DELETE and the INSERT commit together, so a
# crash can neither lose the job nor leave it in both tables. Returns one row when moved.
FAIL = f"""
WITH gone AS (
    DELETE FROM {{jobs}} WHERE id = %(id)s AND lease_token = %(token)s
    RETURNING {_COLUMNS}
)
INSERT INTO {{failed}} ({_FAILED_COLUMNS})
SELECT {failed_select("%(error)s")}, %(now)s
FROM gone
RETURNING id"""

# -- failed jobs --------------------------------------------------------------------------------

FAILED_ALL = f"""
SELECT {_FAILED_COLUMNS} FROM {{failed}} ORDER BY failed_at, id LIMIT %(limit)s"""
FAILED_QUEUE = f"""
SELECT {_FAILED_COLUMNS} FROM {{failed}} WHERE queue = %(queue)s
ORDER BY failed_at, id LIMIT %(limit)s"""

# Back to the jobs table as new (attempts 0, due now) and out of the failed table, atomically.
# A job whose unique_key is held by a pending job, or that another process is retrying at the same
# moment, is not inserted (ON CONFLICT DO NOTHING) and so stays in the failed table: only rows that
# really moved are deleted, and the returned count is of those.
_RETRY = f"""
WITH moved AS (
    INSERT INTO {{{{jobs}}}} ({_COLUMNS})
    SELECT {retry_select("%(now)s")}
    FROM {{{{failed}}}} {{where}}
    ORDER BY failed_at, id
    ON CONFLICT DO NOTHING
    RETURNING id, queue
), gone AS (
    DELETE FROM {{{{failed}}}} WHERE id = ANY(ARRAY(SELECT id FROM moved)) RETURNING id
), woken AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM moved) AS due
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM woken)"""
RETRY_ALL = _RETRY.format(where="")
RETRY_IDS = _RETRY.format(where="WHERE id = ANY(%(ids)s)")

FORGET_ALL = "DELETE FROM {failed}"
FORGET_IDS = "DELETE FROM {failed} WHERE id = ANY(%(ids)s)"

# -- inspecting and managing --------------------------------------------------------------------

# Pending and delayed rows only: a running job's row stays for its worker to settle. A row whose
# lease ran out counts as waiting, as reservation would take it.
PURGE = """
DELETE FROM {jobs}
WHERE queue = %(queue)s AND (reserved_until IS NULL OR reserved_until <= %(now)s)"""

# Counts per queue in one statement: (queue, pending, delayed, reserved, failed) per row, jobs
# table rows first, then failed table rows, to be summed by queue.
_STATS = """
SELECT queue,
       count(*) FILTER (WHERE available_at <= %(now)s
                          AND (reserved_until IS NULL OR reserved_until <= %(now)s)),
       count(*) FILTER (WHERE available_at > %(now)s
                          AND (reserved_until IS NULL OR reserved_until <= %(now)s)),
       count(*) FILTER (WHERE reserved_until > %(now)s),
       0
FROM {{jobs}} {where} GROUP BY queue
UNION ALL
SELECT queue, 0, 0, 0, count(*) FROM {{failed}} {where} GROUP BY queue"""
STATS_ALL = _STATS.format(where="")
STATS_QUEUES = _STATS.format(where="WHERE queue = ANY(%(queues)s)")


def _quote(name: str) -> str:
    # Names are checked against ^[A-Za-z_][A-Za-z0-9_]*$ by DatabaseOptions, so doubling quotes is
    # never needed; quoting keeps the exact case the config gives.
    return f'"{name}"'


def channel_name(table: str) -> str:
    """The LISTEN/NOTIFY channel of a jobs table (at most 63 bytes, the identifier limit)."""
    return f"queuekit_{table}"[:63]


_PLACEHOLDER = re.compile(rb"%\((\w+)\)s")


def _statement(name: str, statement: bytes) -> Statement:
    """``statement`` with its ``%(name)s`` parameters numbered ``$1, $2...`` in order of first use.

    The server infers each parameter's type from where it is used, as psycopg lets it for these
    statements (every one is a column, a comparison with one, or cast). An empty ``name`` gives
    the unnamed statement, planned at every execution.
    """
    params: list[str] = []

    def number(match: re.Match[bytes]) -> bytes:
        param = match.group(1).decode()
        if param not in params:
            params.append(param)
        return b"$%d" % (params.index(param) + 1)

    text = _PLACEHOLDER.sub(number, statement)
    return Statement(f"queuekit_{name}".encode() if name else b"", text, tuple(params))


@dataclass(frozen=True, slots=True)
class HotStatements:
    """The statements of the pipelined session (``$n`` placeholders; see ``Statement``).

    ``insert_job`` takes the row in ``JOB_COLUMNS`` order. ``reserve_any_up_to[n - 1]`` reserves
    at most ``n`` jobs across every queue.
    """

    insert_job: Statement
    reserve_any_up_to: tuple[Statement, ...]
    reserve_any: Statement
    reserve_queue: Statement
    extend: Statement
    complete: Statement
    complete_many: Statement
    release: Statement
    fail: Statement
    notify_committed: Statement

    def reserve_across_queues(self, limit: int) -> Statement:
        """The statement reserving up to ``limit`` jobs across every queue (see RESERVE_ANY)."""
        if limit <= len(self.reserve_any_up_to):
            return self.reserve_any_up_to[limit - 1]
        return self.reserve_any


@dataclass(frozen=True, slots=True)
class PostgresStatements:
    """The statements of one (jobs table, failed table) pair, ready to execute (as bytes)."""

    schema_lock: bytes
    create: tuple[bytes, ...]
    record_version: bytes
    read_version: bytes
    listen: bytes
    push: bytes
    push_notify: bytes
    push_many: bytes
    copy_jobs: bytes
    notify_queues: bytes
    unreserve: bytes
    fail: bytes
    failed_all: bytes
    failed_queue: bytes
    retry_all: bytes
    retry_ids: bytes
    forget_all: bytes
    forget_ids: bytes
    purge: bytes
    stats_all: bytes
    stats_queues: bytes
    hot: HotStatements

    @classmethod
    def render(cls, table: str, failed_table: str) -> PostgresStatements:
        """Fill every template with the quoted names of ``table`` and ``failed_table``."""
        names = {
            "jobs": _quote(table),
            "failed": _quote(failed_table),
            "pick_index": _quote(f"{table}_pick"[:63]),
            "pick_any_index": _quote(f"{table}_pick_any"[:63]),
            "unique_index": _quote(f"{table}_unique_key"[:63]),
            "failed_index": _quote(f"{failed_table}_failed_at"[:63]),
        }

        def fill(template: str) -> bytes:
            return template.format(**names).strip().encode()

        hot = HotStatements(
            insert_job=_statement("insert_job", fill(INSERT_JOB)),
            reserve_any_up_to=tuple(
                _statement(f"reserve_any_{n}", fill(_RESERVE.format(where="", limit=n)))
                for n in range(1, RESERVE_PREPARED_UP_TO + 1)
            ),
            reserve_any=_statement("", fill(RESERVE_ANY)),
            reserve_queue=_statement("", fill(RESERVE_QUEUE)),
            extend=_statement("extend", fill(EXTEND)),
            complete=_statement("complete", fill(COMPLETE)),
            complete_many=_statement("complete_many", fill(COMPLETE_MANY)),
            release=_statement("release", fill(RELEASE)),
            fail=_statement("fail", fill(FAIL)),
            notify_committed=_statement("notify_committed", fill(NOTIFY_COMMITTED)),
        )
        return cls(
            schema_lock=fill(SCHEMA_LOCK),
            create=tuple(fill(t) for t in CREATE),
            record_version=fill(RECORD_VERSION),
            read_version=fill(READ_VERSION),
            listen=f"LISTEN {_quote(channel_name(table))}".encode(),
            push=fill(PUSH),
            push_notify=fill(PUSH_NOTIFY),
            push_many=fill(PUSH_MANY),
            copy_jobs=fill(COPY_JOBS),
            notify_queues=fill(NOTIFY_QUEUES),
            unreserve=fill(UNRESERVE),
            fail=fill(FAIL),
            failed_all=fill(FAILED_ALL),
            failed_queue=fill(FAILED_QUEUE),
            retry_all=fill(RETRY_ALL),
            retry_ids=fill(RETRY_IDS),
            forget_all=fill(FORGET_ALL),
            forget_ids=fill(FORGET_IDS),
            purge=fill(PURGE),
            stats_all=fill(STATS_ALL),
            stats_queues=fill(STATS_QUEUES),
            hot=hot,
        )
