"""The thread that owns an SQLite driver's connection and group-commits its writes.

Every statement of a ``SQLiteDriver`` runs here, so the event loop never waits for the disk or
for SQLite's write lock. The thread takes every operation queued while it was busy as one batch:
consecutive writes share one ``BEGIN IMMEDIATE ... COMMIT`` (each in a savepoint of its own when
it has several statements), reads run alone outside any transaction, and the results go back to
each event loop with one wake-up after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from ...errors import DriverError

__all__ = ["CLOSE", "OPEN", "READ", "STATEMENT", "WRITE", "ConnectionThread"]

log = logging.getLogger("queuekit.drivers.sqlite")

# How an operation meets the connection (see ``ConnectionThread``).
READ = 0  # alone, outside any transaction: never waits for the write lock
WRITE = 1  # inside the next group transaction, in a savepoint of its own
STATEMENT = 2  # one write statement and nothing after it that can fail: joins a group, or
# alone commits on its own
OPEN = 3  # opens the connection the later operations use
CLOSE = 4  # closes it and ends the thread
_WRITES = (WRITE, STATEMENT)

#: Most operations one group transaction takes, so a burst of writes still commits in steps.
_GROUP_LIMIT = 256

# (kind, fn(conn, *args), args, future, loop)
_Op = tuple[
    int, Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", asyncio.AbstractEventLoop
]
# (op, succeeded, result or exception)
_Outcome = tuple[_Op, bool, Any]


class ConnectionThread:
    """The one thread that owns a driver's ``sqlite3`` connection and runs every statement.

    Callers on any event loop ``submit`` an operation and await its future. The thread takes
    every operation queued so far as one batch:

    - consecutive writes run in ONE ``BEGIN IMMEDIATE ... COMMIT``, each inside its own
      savepoint (a one-statement write needs none: SQLite undoes a failed statement itself), so
      an operation that raises is rolled back alone and the others still commit;
    - if SQLite itself abandons the transaction (disk full, I/O error), the failing operation
      gets its error and the others run again in a fresh transaction, since nothing of theirs
      was committed or answered;
    - reads run alone outside any transaction, so they never wait for the write lock;
    - futures are resolved only after the ``COMMIT`` returned, with one wake-up per event loop
      for the whole batch.
    """

    def __init__(self, name: str, label: str) -> None:
        self.conn: sqlite3.Connection | None = None
        self._label = label  # how errors name the queue: "SQLite queue 'jobs.db'"
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def submit(
        self, kind: int, fn: Callable[..., Any], args: tuple[Any, ...]
    ) -> asyncio.Future[Any]:
        """Queue ``fn(conn, *args)``; the future resolves once its effect is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((kind, fn, args, future, loop))
        return future

    def join(self) -> None:
        """Wait for the thread to end (after a ``CLOSE`` operation)."""
        self._thread.join()

    # -- on the thread -------------------------------------------------------------------------

    def _serve(self) -> None:
        pending = self._queue
        while True:
            batch = [pending.get()]
            while len(batch) < _GROUP_LIMIT and not pending.empty():
                batch.append(pending.get())
            outcomes: list[_Outcome] = []
            try:
                stopping = self._run_batch(batch, outcomes)
            except BaseException as e:  # a bug here must not leave callers waiting forever
                answered = {id(o[0]) for o in outcomes}
                outcomes += [(op, False, e) for op in batch if id(op) not in answered]
                stopping = False
            _deliver_all(outcomes)
            if stopping:
                return

    def _run_batch(self, batch: list[_Op], outcomes: list[_Outcome]) -> bool:
        """Run ``batch`` in order; True once it closed the connection."""
        index = 0
        while index < len(batch):
            op = batch[index]
            kind = op[0]
            if kind in _WRITES:
                end = index + 1
                while end < len(batch) and batch[end][0] in _WRITES:
                    end += 1
                group = [o for o in batch[index:end] if not o[3].cancelled()]
                if group:
                    self._run_group(group, outcomes)
                index = end
                continue
            index += 1
            if kind == CLOSE:
                self._run_alone(op, outcomes)
                closed = DriverError(f"{self._label}: the driver was closed before this ran")
                outcomes += [(o, False, closed) for o in batch[index:]]
                return True
            if not op[3].cancelled() or kind == OPEN:
                self._run_alone(op, outcomes)
        return False

    def _run_alone(self, op: _Op, outcomes: list[_Outcome]) -> None:
        kind, fn, args = op[0], op[1], op[2]
        try:
            value = fn(self.conn, *args)
        except Exception as e:
            outcomes.append((op, False, e))
            return
        if kind == OPEN:
            self.conn = value
            value = None
        elif kind == CLOSE:
            self.conn = None
        outcomes.append((op, True, value))

    def _run_group(self, ops: list[_Op], outcomes: list[_Outcome]) -> None:
        """Run writes in one transaction; each op's outcome is recorded only once committed."""
        conn = self.conn
        if conn is None:
            error = DriverError(f"{self._label}: the connection is not open")
            outcomes += [(op, False, error) for op in ops]
            return
        if len(ops) == 1 and ops[0][0] == STATEMENT:
            self._run_alone(ops[0], outcomes)  # one statement is a transaction of its own
            return
        alone = len(ops) == 1
        done: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for index, op in enumerate(ops):
                if alone:  # an error rolls back the whole transaction below: no savepoint
                    done.append((op, True, op[1](conn, *op[2])))
                    continue
                # A failed statement is undone by SQLite itself, so a one-statement operation
                # needs no savepoint to leave the others' work intact.
                savepoint = op[0] == WRITE
                if savepoint:
                    conn.execute("SAVEPOINT queuekit_op")
                try:
                    value = op[1](conn, *op[2])
                except Exception as e:
                    if not conn.in_transaction:
                        # SQLite rolled the whole transaction back: the others lost their
                        # effect too, unanswered, so they simply run again.
                        outcomes.append((op, False, e))
                        self._run_group(ops[:index] + ops[index + 1 :], outcomes)
                        return
                    if savepoint:
                        conn.execute("ROLLBACK TO queuekit_op")
                        conn.execute("RELEASE queuekit_op")
                    done.append((op, False, e))
                    continue
                if savepoint:
                    conn.execute("RELEASE queuekit_op")
                done.append((op, True, value))
            conn.execute("COMMIT")
        except BaseException as e:
            if conn.in_transaction:  # never leave the connection inside a transaction
                try:
                    conn.rollback()
                except sqlite3.Error:
                    log.exception(
                        "queuekit: %s: rolling back a failed transaction failed", self._label
                    )
            outcomes += [(op, False, e) for op in ops]  # nothing of theirs was committed
            return
        outcomes += done


def _deliver_all(outcomes: list[_Outcome]) -> None:
    """Hand the outcomes to their event loops: one wake-up per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0][4], []).append(outcome)
    for loop, items in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these any more
            loop.call_soon_threadsafe(_resolve_all, items)


def _resolve_all(outcomes: list[_Outcome]) -> None:
    for op, ok, value in outcomes:
        future = op[3]
        if future.done():  # the caller was cancelled meanwhile
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
