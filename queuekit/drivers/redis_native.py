"""``NativeTransport``: the Redis driver's own connections to one server, RESP through hiredis.

A job queue sends Redis one short script per dispatch and per acknowledgement, so the client's
cost per command, not Redis's, sets the dispatch rate. redis-py's asyncio client spends several
times what Redis does on each command: a pool checkout and release, a task per timed read
(``asyncio.wait_for``) and its observability hooks. This transport keeps to what the driver
needs: hiredis (C) packs commands and parses replies, concurrent requests share one connection
as a pipeline (Redis answers in order, so a queue of futures matches replies to requests), and
blocking pops get connections of their own, where a wait cannot hold other commands up.

One timer per connection enforces ``socket_timeout``: a server that stops answering fails every
request waiting on that connection with ``DriverError`` ("no reply within ...") and the
connection is dropped; the next call opens a new one. Redis Cluster and injected clients keep
going through redis-py (``ClientTransport``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis

from ..errors import DriverError
from .redis_connection import RedisAddress, ScriptCall
from .redis_scripts import LuaScript

__all__ = ["NativeTransport"]

#: Blocking connections kept open between waits; more concurrent waits open (and close) more.
_IDLE_BLOCKERS = 4


class _ConnectionLost(ConnectionError):
    """The connection closed or failed while requests were waiting on it."""


class _NoReply(TimeoutError):
    """The server did not answer within the socket timeout."""


def _pack(args: Sequence[Any]) -> bytes:
    """One command in RESP. hiredis takes str, bytes, int and float; other buffers are copied."""
    try:
        return hiredis.pack_command(tuple(args))
    except TypeError:
        fixed = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args)
        return hiredis.pack_command(fixed)


class _Connection(asyncio.Protocol):
    """One connection; the futures of requests sent on it, answered in the order sent."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader()
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._deadlines: deque[float] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Why the connection is gone; None while it is usable.
        self.lost: BaseException | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        try:
            while waiting:
                reply = reader.gets()
                if reply is False:
                    return
                future = waiting.popleft()
                self._deadlines.popleft()
                # A caller that was cancelled still had its reply coming; it is dropped here.
                if not future.done():
                    future.set_result(reply)
        except hiredis.ProtocolError as e:
            self.abort(_ConnectionLost(f"unreadable reply: {e}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(_ConnectionLost(str(exc) if exc else "connection closed"))

    # -- requests --------------------------------------------------------------------------

    def send(self, packed: bytes, count: int, timeout: float) -> list[asyncio.Future[Any]]:
        """Write ``count`` packed commands at once; a future for each reply, in order."""
        if self.lost is not None:
            raise self.lost
        deadline = self._loop.time() + timeout
        futures = [self._loop.create_future() for _ in range(count)]
        self._waiting.extend(futures)
        self._deadlines.extend([deadline] * count)
        assert self._transport is not None
        self._transport.write(packed)
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)
        return futures

    def _check(self) -> None:
        """The timer: give up on the connection once its oldest request is overdue."""
        self._timer = None
        if not self._deadlines:
            return
        oldest = self._deadlines[0]
        if self._loop.time() >= oldest:
            self.abort(_NoReply())
        else:
            self._timer = self._loop.call_at(oldest, self._check)

    def abort(self, error: BaseException) -> None:
        """Close now; every request still waiting fails with ``error``."""
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: BaseException) -> None:
        if self.lost is None:
            self.lost = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)
                # Requests of a pipeline after the one that raised are never awaited.
                future.exception()
        self._deadlines.clear()


class NativeTransport:
    """``RedisTransport`` over queuekit's own connections to one (non-cluster) server."""

    cluster = False

    def __init__(
        self, address: RedisAddress, *, connect_timeout: float, socket_timeout: float
    ) -> None:
        self.address = address
        self.description = address.description
        self.connect_timeout = connect_timeout
        self.socket_timeout = socket_timeout
        self._main: _Connection | None = None
        self._opening = asyncio.Lock()
        # Connections belong to the event loop that opened them (see _follow_loop).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Connection] = []
        self._blocking: set[_Connection] = set()

    # -- connections -----------------------------------------------------------------------

    async def _open(self, what: str) -> _Connection:
        """A new connection, authenticated and on the configured database (see
        ``_open_or_fail``)."""
        address = self.address
        loop = asyncio.get_running_loop()
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if address.path is not None:
                    _, conn = await loop.create_unix_connection(
                        lambda: _Connection(loop), address.path
                    )
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop),
                        address.host,
                        address.port,
                        ssl=self._tls_context(),
                        server_hostname=address.host if address.tls else None,
                    )
                await self._handshake(conn)
        except BaseException:
            # Connected, but AUTH or SELECT was refused or did not answer in time.
            if conn is not None:
                conn.abort(_ConnectionLost("not set up"))
            raise
        return conn

    async def _open_or_fail(self, what: str) -> _Connection:
        """``_open``, its socket errors and time-outs as ``DriverError`` naming the server."""
        try:
            return await self._open(what)
        except TimeoutError as e:
            raise DriverError(
                f"Redis {self.description} is unreachable ({what}): "
                f"no connection within {self.connect_timeout:g}s"
            ) from e
        except OSError as e:
            raise DriverError(
                f"Redis {self.description} is unreachable ({what}): {e.strerror or e}"
            ) from e

    def _tls_context(self) -> ssl.SSLContext | None:
        address = self.address
        if not address.tls:
            return None
        context = ssl.create_default_context(cafile=address.tls_ca_file)
        if not address.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _handshake(self, conn: _Connection) -> None:
        """AUTH and SELECT as the URL asks, in one round trip."""
        address = self.address
        commands: list[tuple[str, tuple[Any, ...]]] = []
        if address.password is not None:
            user = (address.username,) if address.username else ()
            commands.append(("AUTH", ("AUTH", *user, address.password)))
        if address.db:
            commands.append(("SELECT", ("SELECT", address.db)))
        if not commands:
            return
        packed = b"".join(_pack(args) for _, args in commands)
        futures = conn.send(packed, len(commands), self.socket_timeout)
        for (name, _), future in zip(commands, futures, strict=True):
            reply = await future
            if isinstance(reply, hiredis.ReplyError):
                failed = "AUTH failed" if name == "AUTH" else f"SELECT {address.db} failed"
                raise DriverError(f"Redis {self.description}: {failed}: {reply}")

    def _follow_loop(self) -> None:
        """Drop the connections if they were opened on another event loop than the running one.

        A driver used from one ``asyncio.run`` after another (a script, a synchronous web view)
        would otherwise hand the new loop futures of a loop that is gone.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                self._drop_all()
                self._opening = asyncio.Lock()
            self._loop = loop

    async def _connection(self) -> _Connection:
        """The shared connection, opened again if it was lost."""
        self._follow_loop()
        conn = self._main
        if conn is not None and conn.lost is None:
            return conn
        async with self._opening:
            conn = self._main
            if conn is None or conn.lost is not None:
                self._main = None
                conn = self._main = await self._open_or_fail("connect")
        return conn

    def _failure(self, what: str, error: BaseException) -> DriverError:
        server = f"Redis {self.description}"
        if isinstance(error, _NoReply):
            return DriverError(f"{server}: no reply within {self.socket_timeout:g}s ({what})")
        return DriverError(f"{server} is unreachable ({what}): {error}")

    async def _request(self, what: str, packed: bytes, count: int = 1) -> list[Any]:
        """Send ``count`` packed commands on the shared connection; their replies in order."""
        conn = self._main
        if conn is None or conn.lost is not None or self._loop is not asyncio.get_running_loop():
            conn = await self._connection()
        try:
            futures = conn.send(packed, count, self.socket_timeout)
            return [await future for future in futures]
        except (_ConnectionLost, _NoReply, OSError) as e:
            raise self._failure(what, e) from e

    # -- RedisTransport ----------------------------------------------------------------------

    async def execute(self, *args: Any) -> Any:
        """Run one command; an error reply raises ``DriverError``."""
        what = str(args[0])
        (reply,) = await self._request(what, _pack(args))
        if isinstance(reply, hiredis.ReplyError):
            raise DriverError(f"Redis {self.description}: {what} failed: {reply}")
        return reply

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA; on ``NOSCRIPT`` (a new or restarted server) the script is loaded and run
        again."""
        packed = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        (reply,) = await self._request(f"script {script.name}", packed)
        if isinstance(reply, hiredis.ReplyError):
            return await self._after_error(script, keys, args, reply)
        return reply

    async def _after_error(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any], reply: Exception
    ) -> Any:
        """Load and run ``script`` again after ``NOSCRIPT``; any other error reply raises."""
        if not str(reply).startswith("NOSCRIPT"):
            raise DriverError(f"Redis {self.description}: script {script.name} failed: {reply}")
        return await self._load_and_run(script, keys, args)

    async def _load_and_run(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """SCRIPT LOAD, then EVALSHA, in one round trip."""
        packed = _pack(("SCRIPT", "LOAD", script.source)) + _pack(
            ("EVALSHA", script.sha, len(keys), *keys, *args)
        )
        loaded, reply = await self._request(f"script {script.name}", packed, 2)
        for answer in (loaded, reply):
            if isinstance(answer, hiredis.ReplyError):
                raise DriverError(
                    f"Redis {self.description}: script {script.name} failed: {answer}"
                )
        return reply

    async def run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Every script in one write (one round trip, not atomic together); replies in order."""
        if len(calls) == 1:
            return [await self.run_script(*calls[0])]
        packed = b"".join(
            _pack(("EVALSHA", script.sha, len(keys), *keys, *args)) for script, keys, args in calls
        )
        replies = await self._request("script pipeline", packed, len(calls))
        out = []
        loaded: set[str] = set()
        for (script, keys, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, hiredis.ReplyError):
                if script.name in loaded and str(reply).startswith("NOSCRIPT"):
                    reply = await self.run_script(script, keys, args)
                else:
                    reply = await self._after_error(script, keys, args, reply)
                    loaded.add(script.name)
            out.append(reply)
        return out

    async def block(self, keys: Sequence[str], timeout: float) -> None:
        """BLPOP on a connection of its own."""
        await self._blocking_call(keys, timeout, None)

    async def block_then_run(
        self,
        keys: Sequence[str],
        timeout: float,
        script: LuaScript,
        skeys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """BLPOP, then EVALSHA, written together: Redis runs the script the instant the pop
        returns, so a woken worker gets its job without a second round trip."""
        reply = await self._blocking_call(keys, timeout, (script, skeys, args))
        if isinstance(reply, hiredis.ReplyError):
            return await self._after_error(script, skeys, args, reply)
        return reply

    async def _blocking_call(
        self, keys: Sequence[str], timeout: float, then: ScriptCall | None
    ) -> Any:
        """BLPOP ``keys`` for up to ``timeout`` seconds (and run ``then``) on an idle blocking
        connection; the script's reply, or None."""
        what = "BLPOP" if then is None else "BLPOP + script"
        packed = _pack(("BLPOP", *keys, f"{max(timeout, 0.01):.3f}"))
        count = 1
        if then is not None:
            script, skeys, args = then
            packed += _pack(("EVALSHA", script.sha, len(skeys), *skeys, *args))
            count = 2
        self._follow_loop()
        conn = self._idle.pop() if self._idle else await self._open_or_fail(what)
        self._blocking.add(conn)
        done = False
        try:
            futures = conn.send(packed, count, timeout + self.socket_timeout)
            replies = [await future for future in futures]
            done = True
        except (_ConnectionLost, _NoReply, OSError) as e:
            raise self._failure(what, e) from e
        finally:
            self._blocking.discard(conn)
            if done and conn.lost is None and len(self._idle) < _IDLE_BLOCKERS:
                self._idle.append(conn)
            else:
                # Cancelled mid-wait its pop is still pending on the server, so it is never
                # reused; a healthy one beyond the idle ones kept is closed too.
                conn.abort(_ConnectionLost("closed"))
        popped = replies[0]
        if isinstance(popped, hiredis.ReplyError):
            raise DriverError(f"Redis {self.description}: {what} failed: {popped}")
        return replies[1] if then is not None else None

    async def close(self) -> None:
        """Close every connection; requests still waiting fail with ``DriverError``."""
        self._drop_all()

    def _drop_all(self) -> None:
        conns = [*self._idle, *self._blocking]
        if self._main is not None:
            conns.append(self._main)
        self._main = None
        self._idle.clear()
        self._blocking.clear()
        for conn in conns:
            # On a loop that is already closed, aborting raises; the socket goes with the loop.
            with contextlib.suppress(Exception):
                conn.abort(_ConnectionLost("closed"))
