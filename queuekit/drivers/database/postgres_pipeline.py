"""``PipelinedSession``: PostgreSQL connections that many coroutines share, in pipeline mode.

The PostgreSQL dialect runs its frequent statements (push, reserve, extend, complete, release,
fail) here rather than through the pool. Each is still ONE statement in its own transaction, but:

- a statement is prepared on a connection the first time it runs there (Parse sent in the same
  write as its first execution, so that costs no round trip), and every execution is sent at
  once as Bind/Execute followed by a Sync. A Sync ends the implicit transaction, so each
  statement commits (or fails) on its own, exactly as in autocommit: an error in one never
  touches another;
- one reader callback stays registered on each socket for the connection's life and hands each
  result to the caller waiting for it: no pool checkout, cursor or reader registration per
  statement, which cost about as much CPU time as the round trip itself;
- statements travel together on a connection (the server runs them in the order sent and answers
  in that order), up to ``_DEPTH`` at a time: enough for a worker's acknowledgement to share a
  round trip with its next reservation. Past that the next connection takes them, opened in the
  background when needed, up to the session's size, and then the least busy one. A caller
  issuing one statement after another keeps to one connection and its prepared plans; many
  concurrent callers spread over several server processes, whose commits the server flushes to
  disk together (group commit) rather than one after another on a single connection.

Only statements that never wait for another transaction's row or index lock belong here: one that
waited would hold up the statements queued behind it on its connection.

When a connection breaks, every statement in flight on it fails with the error (as on a pooled
connection, the caller cannot know whether it committed) and it leaves the session; the next
statement opens a new one if none is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer

__all__ = ["PipelinedSession", "Statement"]

log = logging.getLogger("queuekit.database.postgres")

# Statements in flight on one connection before the next connection is used.
_DEPTH = 2

_SYNC = pq.ExecStatus.PIPELINE_SYNC
_TUPLES_OK = pq.ExecStatus.TUPLES_OK
_COMMAND_OK = pq.ExecStatus.COMMAND_OK


@dataclass(frozen=True, slots=True)
class Statement:
    """A statement of the session: its name, ``$n`` text and parameter names.

    A named statement is prepared once per connection and then runs the plan PostgreSQL keeps
    for it (a generic plan, once that looks no worse than planning each time). An empty name
    means the unnamed statement: parsed and planned at every execution with the actual values,
    for a statement whose generic plan could be far worse than a fresh one.

    ``params[i]`` is the name of parameter ``$i+1``; ``args`` puts a mapping in that order.
    """

    name: bytes
    text: bytes
    params: tuple[str, ...]

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """The parameters of ``values`` in ``$n`` order."""
        return [values[p] for p in self.params]


class _Call:
    """One statement sent and not yet answered.

    ``rows`` asks for the result rows (else the row count). ``orphaned`` receives the rows when
    the caller stopped waiting (was cancelled) before they arrived, so they are not lost.
    ``parsing`` names the statement whose Parse was sent just before it (its first result).
    """

    __slots__ = ("future", "orphaned", "outcome", "parsing", "rows")

    def __init__(
        self,
        future: asyncio.Future[Any],
        rows: bool,
        orphaned: Callable[[list[tuple[Any, ...]]], None] | None,
    ) -> None:
        self.future = future
        self.rows = rows
        self.orphaned = orphaned
        self.outcome: Any = None
        self.parsing: bytes | None = None


class _Connection:
    """One open connection in pipeline mode; broken for good after its first failure.

    ``on_broken`` is called once, when it breaks, so that its session stops using it.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[Any],
        on_broken: Callable[[_Connection], None],
    ) -> None:
        self.conn = conn
        self._on_broken = on_broken
        self.pgconn = conn.pgconn
        self.fd = self.pgconn.socket
        self.encoding = conn.info.encoding
        self.loop = asyncio.get_running_loop()
        self.transformer = Transformer(conn)
        self.calls: deque[_Call] = deque()
        # Statements prepared on this connection (or whose Parse is on its way).
        self.prepared: set[bytes] = set()
        self.broken: Exception | None = None
        self._writing = False
        self._formats: dict[int, list[PyFormat]] = {}
        self.pgconn.nonblocking = 1
        self.pgconn.enter_pipeline_mode()
        self.loop.add_reader(self.fd, self._on_readable)

    # -- sending -----------------------------------------------------------------------------

    def send(
        self,
        statement: Statement,
        args: Sequence[Any],
        rows: bool,
        orphaned: Callable[[list[tuple[Any, ...]]], None] | None,
    ) -> asyncio.Future[Any]:
        """Send one execution of ``statement``; the future gets its rows or row count."""
        if self.broken is not None:
            raise self.broken
        formats = self._formats.get(len(args))
        if formats is None:
            formats = self._formats[len(args)] = [PyFormat.TEXT] * len(args)
        # Dumping can refuse a value (a ProgrammingError for the caller) before anything is sent.
        values = self.transformer.dump_sequence(args, formats)
        call = _Call(self.loop.create_future(), rows, orphaned)
        pgconn, name = self.pgconn, statement.name
        try:
            if not name:
                pgconn.send_query_params(statement.text, values)
            else:
                if name not in self.prepared:
                    # The server infers each parameter's type from where it is used.
                    pgconn.send_prepare(name, statement.text, None)
                    self.prepared.add(name)
                    call.parsing = name
                pgconn.send_query_prepared(name, values)
            # Ends the statement's implicit transaction, and flushes what fits in the socket.
            pgconn.pipeline_sync()
            pending = pgconn.flush()
        except psycopg.Error as e:
            self.fail(e)
            raise
        self.calls.append(call)
        if pending and not self._writing:
            self._writing = True
            self.loop.add_writer(self.fd, self._on_writable)
        return call.future

    def _on_writable(self) -> None:
        try:
            if self.pgconn.flush() == 0:
                self._writing = False
                self.loop.remove_writer(self.fd)
        except psycopg.Error as e:
            self.fail(e)

    # -- receiving ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        pgconn, calls = self.pgconn, self.calls
        try:
            pgconn.consume_input()
            if not calls:
                # Nothing was asked: the server is closing the session (a restart, a DBA).
                if pgconn.status != pq.ConnStatus.OK:
                    self.fail(psycopg.OperationalError("the server closed the connection"))
                return
            ended = False  # a None result ends one statement's results; two in a row: no more
            while calls and not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:
                    if ended:
                        break
                    ended = True
                    continue
                ended = False
                if result.status == _SYNC:
                    self._finish(calls.popleft())
                else:
                    self._take(calls[0], result)
        except psycopg.Error as e:
            self.fail(e)

    def _take(self, call: _Call, result: pq.abc.PGresult) -> None:
        status = result.status
        if call.parsing is not None:
            name, call.parsing = call.parsing, None
            if status != _COMMAND_OK:
                # Not prepared after all: the execution after it is skipped (PIPELINE_ABORTED).
                self.prepared.discard(name)
                call.outcome = errors.error_from_result(result, encoding=self.encoding)
            return
        if isinstance(call.outcome, Exception):
            return  # the first error is the one to report
        if status == _TUPLES_OK:
            if call.rows:
                self.transformer.set_pgresult(result)
                call.outcome = self.transformer.load_rows(0, result.ntuples, tuple)
            else:
                call.outcome = result.command_tuples or 0
        elif status == _COMMAND_OK:
            call.outcome = [] if call.rows else (result.command_tuples or 0)
        else:
            # A failed statement (a constraint, a lock timeout): this call's error only.
            call.outcome = errors.error_from_result(result, encoding=self.encoding)

    @staticmethod
    def _finish(call: _Call) -> None:
        outcome = call.outcome
        if call.future.done():
            # The caller was cancelled while its statement ran; rows it took must not be lost.
            if call.orphaned is not None and isinstance(outcome, list) and outcome:
                call.orphaned(outcome)
            return
        if isinstance(outcome, Exception):
            call.future.set_exception(outcome)
        else:
            call.future.set_result(outcome)

    # -- failing and closing ----------------------------------------------------------------

    def fail(self, error: Exception) -> None:
        """Mark the connection broken and fail every statement in flight with ``error``."""
        if self.broken is None:
            self.broken = error
            self.loop.remove_reader(self.fd)
            if self._writing:
                self.loop.remove_writer(self.fd)
                self._writing = False
            self._on_broken(self)
        while self.calls:
            call = self.calls.popleft()
            if not call.future.done():
                # The server's own word, when it sent one before closing ("terminating
                # connection due to administrator command"), says more than the closed socket.
                reported = call.outcome if isinstance(call.outcome, Exception) else error
                call.future.set_exception(reported)

    async def close(self) -> None:
        """Fail what is in flight and close the connection."""
        self.fail(psycopg.OperationalError("the connection was closed"))
        await self.conn.close()


class PipelinedSession:
    """Statements run on up to ``size`` shared connections in pipeline mode (see the module).

    Connections open when needed: the first with the first statement, more while all are busy.
    Errors are psycopg's, for the caller to translate.

    Example::

        session = PipelinedSession(conninfo, {"autocommit": True}, size=4)
        rows = await session.fetch(statement, [1.5, "token"])
        await session.close()
    """

    def __init__(self, conninfo: str, connect_kwargs: Mapping[str, Any], size: int) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = dict(connect_kwargs)
        self._size = max(1, size)
        self._lanes: list[_Connection] = []
        self._first = asyncio.Lock()
        self._growing: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def fetch(
        self,
        statement: Statement,
        args: Sequence[Any],
        *,
        orphaned: Callable[[list[tuple[Any, ...]]], None] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Run ``statement``; returns its rows.

        ``orphaned`` gets the rows if the caller is cancelled before they arrive (the statement
        may already have run: a reservation hands its jobs back there).
        """
        lane = self._pick() or await self._open_first()
        rows: list[tuple[Any, ...]] = await lane.send(statement, args, True, orphaned)
        return rows

    async def execute(self, statement: Statement, args: Sequence[Any]) -> int:
        """Run ``statement``; returns the number of rows it wrote (or returned)."""
        lane = self._pick() or await self._open_first()
        count: int = await lane.send(statement, args, False, None)
        return count

    def _pick(self) -> _Connection | None:
        """The first connection with room, else the least busy one (and open another meanwhile)."""
        least_busy: _Connection | None = None
        for lane in self._lanes:
            if len(lane.calls) < _DEPTH:
                return lane
            if least_busy is None or len(lane.calls) < len(least_busy.calls):
                least_busy = lane
        if least_busy is not None and len(self._lanes) < self._size and self._growing is None:
            self._growing = asyncio.get_running_loop().create_task(self._grow())
        return least_busy

    async def _open_first(self) -> _Connection:
        # No connection is up: open one and wait for it. Concurrent callers share it.
        async with self._first:
            lane = self._pick()
            if lane is None:
                lane = await self._connect()
                self._lanes.append(lane)
            return lane

    async def _grow(self) -> None:
        try:
            lane = await self._connect()
        except (psycopg.Error, OSError) as e:
            # The busy connections carry the load; the next busy moment tries again.
            log.debug("queuekit: could not open one more pipelined connection: %s", e)
        else:
            self._lanes.append(lane)
        finally:
            self._growing = None

    async def _connect(self) -> _Connection:
        if self._closed:
            raise psycopg.OperationalError("the session is closed")
        conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        try:
            if self._closed:
                raise psycopg.OperationalError("the session is closed")
            return _Connection(conn, self._drop)
        except BaseException:
            await conn.close()
            raise

    def _drop(self, lane: _Connection) -> None:
        """Forget a broken connection and close it in the background."""
        if lane in self._lanes:
            self._lanes.remove(lane)
        task = asyncio.get_running_loop().create_task(lane.conn.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def abandon(self) -> None:
        """Let go of every connection without the event loop they were opened on (it is gone,
        or elsewhere): libpq closes each socket directly. The session is closed after."""
        self._closed = True
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.broken = lane.broken or psycopg.OperationalError("the event loop changed")
            with contextlib.suppress(Exception):
                lane.pgconn.finish()

    async def close(self) -> None:
        """Close every connection; statements in flight fail. Idempotent."""
        self._closed = True
        if self._growing is not None:
            self._growing.cancel()
            await asyncio.gather(self._growing, return_exceptions=True)
        async with self._first:
            lanes, self._lanes = self._lanes, []
        for lane in lanes:
            await lane.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
