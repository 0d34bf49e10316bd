"""How the Redis driver talks to Redis: a ``RedisTransport`` with two implementations.

``NativeTransport`` speaks RESP2 over one asyncio stream per connection. Commands from every
coroutine share one connection and are pipelined by arrival (RESP replies come back in order),
so concurrent ``complete`` calls of a busy worker cost one round trip together; blocking pops
get connections of their own. It does a round trip in well under half of redis-py's client time,
and that time is the whole cost of a one-by-one dispatch.

``ClientTransport`` wraps any redis-py compatible asyncio client (``redis.asyncio.Redis``,
``RedisCluster``, ``fakeredis.FakeAsyncRedis``) for deployments that bring their own client.

Both raise ``DriverError`` naming the server for a lost connection, a timeout or an error reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, DriverError
from .redis_scripts import SCRIPTS, LuaScript

__all__ = [
    "ClientTransport",
    "NativeTransport",
    "RedisAddress",
    "RedisTransport",
    "ReplyError",
]

#: One script run: the script, its keys and its arguments.
ScriptCall = tuple[LuaScript, Sequence[str], Sequence[Any]]


class ReplyError(Exception):
    """An error reply from the server (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RedisTransport(Protocol):
    """What the driver needs from a Redis connection."""

    #: Names the server in errors: ``redis://host:port/db`` (never the password).
    description: str
    #: True when keys of different queues may not meet in one command (Redis Cluster).
    cluster: bool

    async def execute(self, *args: Any) -> Any:
        """Run one command and return its reply."""

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run ``script`` by SHA, loading it first if the server does not know it."""

    async def run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run several scripts in one round trip (not atomic together); replies in order."""

    async def block(self, keys: Sequence[str], timeout: float) -> None:
        """Return once one of ``keys`` has an item (popping it) or ``timeout`` has passed."""

    async def block_then_run(
        self,
        keys: Sequence[str],
        timeout: float,
        script: LuaScript,
        skeys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """``block`` on ``keys`` (one slot), then run ``script``; returns the script's reply."""

    async def close(self) -> None:
        """Close every connection."""


# -- addresses -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """A parsed ``redis://``, ``rediss://`` or ``unix://`` URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, key: str = "queue.redis.url") -> RedisAddress:
        """Parse ``url``; ``ConfigError`` names ``key`` and what is wrong.

        ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS (query
        ``ssl_cert_reqs=none`` skips certificate checks, ``ssl_ca_certs=path`` names a CA file),
        ``unix:///path/to/socket?db=0``.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(
                f"{key}: expected a redis://, rediss:// or unix:// URL, got {_safe_url(url)!r}"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        db_text = query.get("db") or (parts.path.lstrip("/") if parts.scheme != "unix" else "")
        try:
            db = int(db_text or 0)
            port = parts.port or 6379
        except ValueError as e:
            raise ConfigError(f"{key}: bad port or database number in {_safe_url(url)!r}") from e
        cert_reqs = query.get("ssl_cert_reqs", "required").lower()
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=port,
            path=unquote(parts.path) if parts.scheme == "unix" else None,
            db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
            tls_verify=cert_reqs not in ("none", "cert_none"),
            tls_ca_file=query.get("ssl_ca_certs"),
        )

    @property
    def description(self) -> str:
        """The address without credentials, for messages."""
        if self.path is not None:
            return f"unix://{self.path}?db={self.db}"
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


# -- RESP2 ---------------------------------------------------------------------------------


class _Incomplete(Exception):
    pass


def pack_command(args: Sequence[Any]) -> bytes:
    """Encode one command as a RESP array of bulk strings (str, bytes, int or float args)."""
    # Built as text and encoded once: for the usual ASCII arguments len() is the byte length,
    # which makes this the cheapest part of a dispatch instead of the dearest.
    pieces = [f"*{len(args)}\r\n"]
    for arg in args:
        if type(arg) is not str:
            if isinstance(arg, bytes):
                return _pack_binary(args)
            arg = _number_text(arg)
        size = len(arg) if arg.isascii() else len(arg.encode())
        pieces.append(f"${size}\r\n{arg}\r\n")
    return "".join(pieces).encode()


def _pack_binary(args: Sequence[Any]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = _number_text(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def _number_text(arg: Any) -> str:
    if isinstance(arg, int | float) and not isinstance(arg, bool):
        return repr(arg)
    raise TypeError(f"cannot send {type(arg).__name__} to Redis: {arg!r}")


class RespParser:
    """Incremental RESP2 reply parser: ``feed`` bytes, then ``next`` until it returns NOTHING."""

    NOTHING = object()

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        """Add bytes read from the socket."""
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next(self) -> Any:
        """The next complete reply, or ``NOTHING`` if the buffer holds none yet."""
        if self._pos >= len(self._buf):
            return self.NOTHING
        try:
            value, self._pos = self._parse(self._pos)
        except _Incomplete:
            return self.NOTHING
        return value

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind = buf[pos]
        if kind == 36:  # $ bulk string
            size = int(buf[pos + 1 : end])
            if size < 0:
                return None, end + 2
            start = end + 2
            if len(buf) < start + size + 2:
                raise _Incomplete
            return bytes(buf[start : start + size]), start + size + 2
        if kind == 42:  # * array
            count = int(buf[pos + 1 : end])
            if count < 0:
                return None, end + 2
            items: list[Any] = []
            pos = end + 2
            size_buf = len(buf)
            for _ in range(count):
                # Inline the common elements (bulk strings, integers); recurse for the rest.
                if pos < size_buf and buf[pos] == 36:
                    end = buf.find(b"\r\n", pos)
                    if end < 0:
                        raise _Incomplete
                    size = int(buf[pos + 1 : end])
                    if size < 0:
                        items.append(None)
                        pos = end + 2
                        continue
                    start = end + 2
                    if size_buf < start + size + 2:
                        raise _Incomplete
                    items.append(bytes(buf[start : start + size]))
                    pos = start + size + 2
                else:
                    item, pos = self._parse(pos)
                    items.append(item)
            return items, pos
        if kind == 58:  # : integer
            return int(buf[pos + 1 : end]), end + 2
        if kind == 43:  # + simple string
            return bytes(buf[pos + 1 : end]), end + 2
        if kind == 45:  # - error
            return ReplyError(buf[pos + 1 : end].decode(errors="replace")), end + 2
        raise ReplyError(f"protocol error: unexpected reply type byte {bytes([kind])!r}")


class _Connection(asyncio.Protocol):
    """One socket: requests are written in order and replies resolve futures in that order."""

    def __init__(self, description: str, reply_timeout: float) -> None:
        self.description = description
        self._reply_timeout = reply_timeout
        self._loop = asyncio.get_running_loop()
        self._parser = RespParser()
        self._waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self.closed = False

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._watchdog = self._loop.call_later(1.0, self._watch)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        parser.feed(data)
        waiting = self._waiting
        try:
            while waiting:
                value = parser.next()
                if value is RespParser.NOTHING:
                    return
                fut = waiting.popleft()[0]
                if not fut.done():
                    fut.set_result(value)
        except (ReplyError, ValueError) as e:
            self._abort(f"unreadable reply ({e})")

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost ({exc})" if exc else "connection closed by the server"
        self._fail_all(reason)

    # requests

    def request(self, payload: bytes, count: int, extra_wait: float = 0.0) -> list[Any]:
        """Write ``payload`` holding ``count`` commands; one future per expected reply."""
        if self.closed or self._transport is None:
            raise ConnectionError("connection is closed")
        limit = time.monotonic() + self._reply_timeout + extra_wait
        futures = []
        for _ in range(count):
            fut = self._loop.create_future()
            self._waiting.append((fut, limit))
            futures.append(fut)
        self._transport.write(payload)
        return futures

    def close(self) -> None:
        """Close the socket; pending requests fail."""
        if self._transport is not None and not self.closed:
            self._transport.close()
        self._fail_all("connection closed")

    # failure

    def _watch(self) -> None:
        # One timer per connection instead of one per request: a server that stops answering
        # (hung, or a network partition without a reset) is detected within a second or so.
        if self.closed:
            return
        if self._waiting and self._waiting[0][1] < time.monotonic():
            self._abort(f"no reply within {self._reply_timeout:g}s")
            return
        self._watchdog = self._loop.call_later(1.0, self._watch)

    def _abort(self, reason: str) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._fail_all(reason)

    def _fail_all(self, reason: str) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        waiting, self._waiting = self._waiting, deque()
        for fut, _ in waiting:
            if not fut.done():
                fut.set_exception(ConnectionError(reason))


class NativeTransport:
    """RESP2 over asyncio: one pipelined command connection plus connections for blocking pops.

    Reconnects on the next command after a connection is lost (the worker's back-off spaces the
    attempts); every script is loaded on each new command connection.
    """

    cluster = False

    def __init__(
        self, address: RedisAddress, *, connect_timeout: float = 5.0, reply_timeout: float = 10.0
    ) -> None:
        self.address = address
        self.description = address.description
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout
        self._main: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._idle_blockers: list[_Connection] = []
        self._closed = False

    # connections

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        addr = self.address

        def factory() -> _Connection:
            return _Connection(self.description, self._reply_timeout)

        conn: _Connection | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                if addr.path is not None:
                    _, conn = await loop.create_unix_connection(factory, addr.path)
                else:
                    _, conn = await loop.create_connection(
                        factory, addr.host, addr.port, ssl=self._tls_context()
                    )
                setup: list[tuple[Any, ...]] = []
                if addr.password is not None:
                    auth = (addr.username,) if addr.username else ()
                    setup.append(("AUTH", *auth, addr.password))
                if addr.db:
                    setup.append(("SELECT", addr.db))
                if setup:
                    replies = await asyncio.gather(
                        *conn.request(b"".join(pack_command(c) for c in setup), len(setup))
                    )
                    for command, reply in zip(setup, replies, strict=True):
                        if isinstance(reply, ReplyError):
                            conn.close()
                            raise DriverError(
                                f"Redis {self.description}: {command[0]} failed: {reply}"
                            )
        except (OSError, TimeoutError, ConnectionError) as e:
            if conn is not None:
                conn.close()
            raise DriverError(f"Redis {self.description} is unreachable: {_reason(e)}") from e
        return conn

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.address.tls:
            return None
        context = ssl.create_default_context(cafile=self.address.tls_ca_file)
        if not self.address.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _command_connection(self) -> _Connection:
        conn = self._main
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise DriverError(f"Redis {self.description}: the driver is closed")
        # Callers that arrive while a connect is under way wait for that one connect.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect_main())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _connect_main(self) -> _Connection:
        conn = await self._open()
        payload = b"".join(pack_command(("SCRIPT", "LOAD", s.source)) for s in SCRIPTS)
        try:
            replies = await asyncio.gather(*conn.request(payload, len(SCRIPTS)))
        except ConnectionError as e:
            raise DriverError(f"Redis {self.description}: {_reason(e)}") from e
        for script, reply in zip(SCRIPTS, replies, strict=True):
            if isinstance(reply, ReplyError):
                conn.close()
                raise DriverError(
                    f"Redis {self.description}: loading script {script.name!r} failed: {reply}"
                )
        self._main = conn
        return conn

    # commands

    async def _send(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        conn = self._main
        if conn is None or conn.closed:
            conn = await self._command_connection()
        payload = b"".join(pack_command(c) for c in commands)
        try:
            futures = conn.request(payload, len(commands))
            if len(futures) == 1:
                return [await futures[0]]
            return list(await asyncio.gather(*futures))
        except ConnectionError as e:
            raise DriverError(f"Redis {self.description}: {_reason(e)}") from e

    async def execute(self, *args: Any) -> Any:
        """Run one command; an error reply raises ``DriverError``."""
        (reply,) = await self._send([args])
        return _check(reply, self.description, str(args[0]))

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA ``script``; on NOSCRIPT (a ``SCRIPT FLUSH``) load it and run it again."""
        (reply,) = await self._send([_evalsha(script, keys, args)])
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self.execute("SCRIPT", "LOAD", script.source)
            (reply,) = await self._send([_evalsha(script, keys, args)])
        return _check(reply, self.description, f"script {script.name}")

    async def run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Several EVALSHAs in one write; any NOSCRIPT reply is loaded and run again."""
        replies = await self._send([_evalsha(*call) for call in calls])
        out = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
                reply = await self.run_script(*call)
            out.append(_check(reply, self.description, f"script {call[0].name}"))
        return out

    async def _blocking(self, commands: Sequence[Sequence[Any]], timeout: float) -> list[Any]:
        """Send ``commands`` on a connection of its own (a blocked connection answers nothing
        else), the first of which blocks for up to ``timeout`` seconds."""
        if self._closed:
            raise DriverError(f"Redis {self.description}: the driver is closed")
        conn = None
        while self._idle_blockers and conn is None:
            idle = self._idle_blockers.pop()
            conn = None if idle.closed else idle  # the server may have gone away meanwhile
        if conn is None:
            conn = await self._open()
        payload = b"".join(pack_command(c) for c in commands)
        try:
            futures = conn.request(payload, len(commands), extra_wait=timeout)
            replies = list(await asyncio.gather(*futures))
        except ConnectionError as e:
            conn.close()
            raise DriverError(f"Redis {self.description}: {_reason(e)}") from e
        except BaseException:
            # Cancelled mid-block: the connection is still blocked on the server; drop it.
            conn.close()
            raise
        if self._closed:
            conn.close()
        else:
            self._idle_blockers.append(conn)
        return replies

    async def block(self, keys: Sequence[str], timeout: float) -> None:
        """BLPOP ``keys`` for up to ``timeout`` seconds."""
        (reply,) = await self._blocking([("BLPOP", *keys, f"{timeout:.3f}")], timeout)
        _check(reply, self.description, "BLPOP")

    async def block_then_run(
        self,
        keys: Sequence[str],
        timeout: float,
        script: LuaScript,
        skeys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """BLPOP and EVALSHA pipelined on one connection: Redis runs the script the moment the
        wait ends, so a woken worker has its job without another round trip."""
        commands = [("BLPOP", *keys, f"{timeout:.3f}"), _evalsha(script, skeys, args)]
        popped, reply = await self._blocking(commands, timeout)
        _check(popped, self.description, "BLPOP")
        if isinstance(reply, ReplyError) and str(reply).startswith("NOSCRIPT"):
            # A server restarted since: the command connection reloads every script.
            return await self.run_script(script, skeys, args)
        return _check(reply, self.description, f"script {script.name}")

    async def close(self) -> None:
        """Close every connection; later calls raise ``DriverError``."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
        if self._main is not None:
            self._main.close()
        for conn in self._idle_blockers:
            conn.close()
        self._idle_blockers.clear()


def _evalsha(script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    return ("EVALSHA", script.sha, len(keys), *keys, *args)


def _check(reply: Any, description: str, what: str) -> Any:
    if isinstance(reply, ReplyError):
        raise DriverError(f"Redis {description}: {what} failed: {reply}")
    return reply


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


# -- redis-py clients --------------------------------------------------------------------------


class ClientTransport:
    """Adapts a redis-py compatible asyncio client (Redis, RedisCluster, FakeAsyncRedis)."""

    def __init__(self, client: Any, *, owned: bool = False, description: str | None = None) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.client = client
        self._owned = owned
        self.cluster = isinstance(client, RedisCluster)
        self.description = description or _describe_client(client)
        self._scripts = {s.name: client.register_script(s.source) for s in SCRIPTS}

    async def _call(self, what: str, coro: Any) -> Any:
        import redis.exceptions as rex

        try:
            return await coro
        except (rex.ConnectionError, rex.TimeoutError, OSError) as e:
            raise DriverError(f"Redis {self.description}: {what}: {_reason(e)}") from e
        except rex.RedisError as e:
            raise DriverError(f"Redis {self.description}: {what} failed: {e}") from e

    async def execute(self, *args: Any) -> Any:
        """Run one command through the client."""
        return await self._call(str(args[0]), self.client.execute_command(*args))

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Run through redis-py's ``Script`` (EVALSHA, loading on NOSCRIPT)."""
        runner = self._scripts[script.name]
        return await self._call(f"script {script.name}", runner(keys=list(keys), args=list(args)))

    async def run_scripts(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """A non-transactional pipeline of EVALSHAs (one round trip); NOSCRIPT ones run again.

        On a cluster the scripts run concurrently instead, one request per script.
        """
        import redis.exceptions as rex

        if len(calls) == 1:
            return [await self.run_script(*calls[0])]
        if self.cluster:
            # redis-py's cluster pipeline refuses EVALSHA: the scripts run side by side instead,
            # each sent to the node that owns its queue.
            return list(await asyncio.gather(*(self.run_script(*call) for call in calls)))
        pipe = self.client.pipeline(transaction=False)
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies = await self._call("script pipeline", pipe.execute(raise_on_error=False))
        out = []
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, rex.NoScriptError):
                reply = await self.run_script(*call)
            elif isinstance(reply, Exception):
                raise DriverError(
                    f"Redis {self.description}: script {call[0].name} failed: {reply}"
                ) from reply
            out.append(reply)
        return out

    async def block(self, keys: Sequence[str], timeout: float) -> None:
        """BLPOP through the client. On a cluster each queue's list lives in a slot of its own
        and one BLPOP may name one slot only: there it waits on every list at once."""
        if not self.cluster or len(keys) == 1:
            await self._call("BLPOP", self.client.blpop(list(keys), timeout=timeout))
            return
        tasks = [
            asyncio.ensure_future(self._call("BLPOP", self.client.blpop([key], timeout=timeout)))
            for key in keys
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def block_then_run(
        self,
        keys: Sequence[str],
        timeout: float,
        script: LuaScript,
        skeys: Sequence[str],
        args: Sequence[Any],
    ) -> Any:
        """``block``, then ``run_script``: two round trips through a redis-py client."""
        await self.block(keys, timeout)
        return await self.run_script(script, skeys, args)

    async def close(self) -> None:
        """Close the client if the driver made it; a client passed in belongs to the caller."""
        if not self._owned:
            return
        close = getattr(self.client, "aclose", None) or self.client.close
        with contextlib.suppress(Exception):
            await close()


def _describe_client(client: Any) -> str:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", {}) or {}
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    return type(client).__name__
