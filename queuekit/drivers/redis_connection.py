"""What the Redis driver needs from a connection (``RedisTransport``), and ``ClientTransport``,
that over a redis-py asyncio client.

For a single server the driver talks through its own connections (``redis_native``). For a
Redis Cluster it builds a ``redis.asyncio.RedisCluster`` from its URL, and it takes any redis-py
compatible client it is given (``fakeredis.FakeAsyncRedis`` in fast tests). Errors come
out as ``DriverError`` naming the server (never its password); redis-py reconnects on the next
call after a lost connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import ConfigError, DriverError
from .redis_scripts import LuaScript

__all__ = ["ClientTransport", "RedisAddress", "RedisTransport", "make_client"]

#: One script run: the script, its keys and its arguments.
ScriptCall = tuple[LuaScript, Sequence[str], Sequence[Any]]


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


def _reason(error: BaseException) -> str:
    return str(error) or type(error).__name__


# -- redis-py clients --------------------------------------------------------------------------


def make_client(url: str, *, cluster: bool, connect_timeout: float, socket_timeout: float) -> Any:
    """A redis-py asyncio client for ``url`` (TLS, password and database come from it)."""
    timeouts = {
        "socket_connect_timeout": connect_timeout,
        # Blocking waits are cut to fit inside this (see ClientTransport.block).
        "socket_timeout": socket_timeout,
    }
    if cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(url, **timeouts)
    from redis.asyncio import Redis

    return Redis.from_url(url, **timeouts)


class ClientTransport:
    """Adapts a redis-py compatible asyncio client (Redis, RedisCluster, FakeAsyncRedis)."""

    def __init__(self, client: Any, *, owned: bool = False, description: str | None = None) -> None:
        from redis.asyncio.cluster import RedisCluster

        self.client = client
        self._owned = owned
        self.cluster = isinstance(client, RedisCluster)
        self.description = description or _describe_client(client)

    def _failure(self, what: str, error: BaseException) -> DriverError | None:
        """The ``DriverError`` naming the server for a redis-py or socket error, else None."""
        import redis.exceptions as rex

        server = f"Redis {self.description}"
        if isinstance(error, rex.AuthenticationError):
            return DriverError(f"{server}: AUTH failed: {_reason(error)}")
        if isinstance(error, rex.TimeoutError):
            limit = _socket_timeout(self.client)
            within = f" within {limit:g}s" if limit is not None else ""
            return DriverError(f"{server}: no reply{within} ({what})")
        if isinstance(error, (rex.ConnectionError, OSError)):
            return DriverError(f"{server} is unreachable ({what}): {_reason(error)}")
        if isinstance(error, rex.RedisError):
            return DriverError(f"{server}: {what} failed: {error}")
        return None

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except Exception as e:
            failure = self._failure(what, e)
            if failure is None:
                raise
            raise failure from e

    async def execute(self, *args: Any) -> Any:
        """Run one command through the client."""
        return await self._call(str(args[0]), self.client.execute_command(*args))

    async def run_script(self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """EVALSHA; on ``NOSCRIPT`` (a new or restarted server) the script is loaded and run
        again."""
        import redis.exceptions as rex

        try:
            return await self.client.evalsha(script.sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            return await self._load_and_run(script, keys, args)
        except Exception as e:
            failure = self._failure(f"script {script.name}", e)
            if failure is None:
                raise
            raise failure from e

    async def _load_and_run(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """SCRIPT LOAD (on every primary of a cluster), then EVALSHA."""
        what = f"script {script.name}"
        await self._call(what, self.client.script_load(script.source))
        return await self._call(what, self.client.evalsha(script.sha, len(keys), *keys, *args))

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
        loaded: set[str] = set()
        for call, reply in zip(calls, replies, strict=True):
            if isinstance(reply, rex.NoScriptError):
                script, keys, args = call
                if script.name in loaded:
                    reply = await self.run_script(script, keys, args)
                else:
                    reply = await self._load_and_run(script, keys, args)
                    loaded.add(script.name)
            elif isinstance(reply, Exception):
                raise DriverError(
                    f"Redis {self.description}: script {call[0].name} failed: {reply}"
                ) from reply
            out.append(reply)
        return out

    def _fit(self, timeout: float) -> float:
        """``timeout`` cut to fit in the client's socket timeout: a blocking wait longer than
        that would read as a dead server."""
        socket_timeout = _socket_timeout(self.client)
        if socket_timeout is not None:
            timeout = min(timeout, socket_timeout * 0.8)
        return max(timeout, 0.01)

    async def block(self, keys: Sequence[str], timeout: float) -> None:
        """BLPOP through the client. On a cluster each queue's list lives in a slot of its own
        and one BLPOP may name one slot only: there it waits on every list at once."""
        timeout = self._fit(timeout)
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
        """``block``, then ``run_script``, in one round trip where the client can.

        Outside a cluster both go out in one pipeline on one connection: Redis runs the script
        the instant the pop returns, so a woken worker gets its job without a second round trip.
        """
        if self.cluster:
            await self.block(keys, timeout)
            return await self.run_script(script, skeys, args)
        import redis.exceptions as rex

        pipe = self.client.pipeline(transaction=False)
        pipe.blpop(list(keys), timeout=self._fit(timeout))
        pipe.evalsha(script.sha, len(skeys), *skeys, *args)
        replies = await self._call("BLPOP + script", pipe.execute(raise_on_error=False))
        reply = replies[1]
        if isinstance(reply, rex.NoScriptError):
            return await self._load_and_run(script, skeys, args)
        if isinstance(reply, Exception):
            raise DriverError(
                f"Redis {self.description}: script {script.name} failed: {reply}"
            ) from reply
        return reply

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


def _socket_timeout(client: Any) -> float | None:
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    value = kwargs.get("socket_timeout")
    if value is None:
        value = getattr(client, "socket_timeout", None)  # RedisCluster keeps it on itself
    return float(value) if isinstance(value, (int, float)) else None
