"""``RedisDriver``: a distributed queue on Redis, shared by any number of workers and machines.

Every state change that touches more than one key is one Lua script (``redis_scripts``), so a
client that dies between two commands can never lose or duplicate a job. Keys of one queue share
a hash tag, so the driver runs on Redis Cluster. Idle workers block on a per-queue wake-up list
and start a dispatched job within milliseconds; delayed jobs and expired leases are moved by
whichever worker reserves next (no janitor process). See ``docs/drivers/redis.md``.

The driver's connections are in ``redis_native`` (redis-py's client, for a cluster or a client
passed in, in ``redis_connection``); stats and failed-job management in ``redis_admin``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ..clock import new_token, now
from ..config import parse_options
from ..errors import CorruptStoreError
from ..record import JobRecord
from . import redis_records as storage
from . import redis_scripts as lua
from .base import Capability, QueueDriver
from .redis_admin import RedisAdmin
from .redis_connection import (
    ClientTransport,
    RedisAddress,
    RedisTransport,
    ScriptCall,
    make_client,
)
from .redis_options import RedisOptions

__all__ = ["RedisDriver", "RedisOptions"]

log = logging.getLogger("queuekit.drivers.redis")

_NOTIFY = lua.KEY_NAMES.index("notify")
_JOBS = lua.KEY_NAMES.index("jobs")
_REFRESH_QUEUES = 1.0  # seconds a worker on every queue trusts its list of queue names


class RedisDriver(RedisAdmin, QueueDriver):
    """Redis driver: leases, priorities, delays, atomic batches and blocking waits.

    Example::

        driver = RedisDriver({"url": "redis://127.0.0.1:6379/0", "retry_after": 90})
        await driver.connect()

    ``client`` injects a redis-py compatible asyncio client (``redis.asyncio.Redis``,
    ``RedisCluster``, ``fakeredis.FakeAsyncRedis``) instead of the driver's own connection; the
    caller keeps owning it.
    """

    name = "redis"
    capabilities = (
        Capability.PRIORITY
        | Capability.DELAY
        | Capability.ATOMIC_BATCH
        | Capability.BLOCKING_WAIT
        | Capability.PERSISTENT
    )

    def __init__(self, options: dict[str, Any] | None = None, *, client: Any = None) -> None:
        self.options = parse_options(RedisOptions, options or {}, "queue.redis")
        self.default_lease = self.options.retry_after
        self.prefix = self.options.prefix
        self._address = RedisAddress.parse(self.options.resolved_url())
        self._client = client
        self._transport: RedisTransport | None = None
        self._keys: dict[str, list[str]] = {}
        self._registered: set[str] = set()
        self._all_queues: list[str] = []
        self._all_read_at = float("-inf")

    @property
    def description(self) -> str:
        """The server this driver talks to, for messages (no password)."""
        return self._t().description

    # -- connection ----------------------------------------------------------------------

    def _t(self) -> RedisTransport:
        if self._transport is None:
            if self._client is not None:
                self._transport = ClientTransport(self._client)
            else:
                self._transport = self._own_transport()
        return self._transport

    def _own_transport(self) -> RedisTransport:
        """The driver's own connections: ``NativeTransport`` (hiredis) for one server, redis-py
        for a cluster or where hiredis is not installed."""
        options = self.options
        if not options.cluster:
            try:
                from .redis_native import NativeTransport
            except ImportError:  # pragma: no cover - hiredis comes with the redis extra
                pass
            else:
                return NativeTransport(
                    self._address,
                    connect_timeout=options.connect_timeout,
                    socket_timeout=options.socket_timeout,
                )
        client = make_client(
            options.resolved_url(),
            cluster=options.cluster,
            connect_timeout=options.connect_timeout,
            socket_timeout=options.socket_timeout,
        )
        return ClientTransport(client, owned=True, description=self._address.description)

    async def connect(self) -> None:
        """Connect and load the scripts; ``DriverError`` names the server if it is unreachable."""
        await self._t().execute("PING")

    async def close(self) -> None:
        """Close the driver's connections (an injected client stays open)."""
        if self._transport is not None:
            await self._transport.close()

    def _keys_of(self, queue: str) -> list[str]:
        keys = self._keys.get(queue)
        if keys is None:
            keys = self._keys[queue] = lua.queue_keys(self.prefix, queue)
        return keys

    async def _register(self, queues: Sequence[str]) -> None:
        # Before the push itself, so a worker on every queue never misses a queue with jobs.
        new = [q for q in dict.fromkeys(queues) if q not in self._registered]
        if new:
            await self._t().execute("SADD", lua.queues_key(self.prefix), *new)
            self._registered.update(new)

    async def _known_queues(self) -> list[str]:
        members = await self._t().execute("SMEMBERS", lua.queues_key(self.prefix))
        return sorted(storage.text(m) for m in members)

    # -- storing ---------------------------------------------------------------------------

    async def push(self, record: JobRecord, **options: Any) -> bool:
        args = [storage.body(record), *storage.placement(record, now())]
        if record.queue not in self._registered:
            await self._register([record.queue])
        # 0 means the id was already stored: a replay of a push whose reply was lost.
        await self._t().run_script(lua.PUSH, self._keys_of(record.queue), args)
        return True

    async def push_many(self, records: Sequence[JobRecord], **options: Any) -> None:
        if not records:
            return
        batch = storage.layout(records, now())  # may raise: then nothing was sent
        await self._register(list(batch))
        # One script for every queue makes the batch atomic; on a cluster a script may only name
        # one slot, so there the batch is atomic per queue.
        groups = [[q] for q in batch] if self._t().cluster else [list(batch)]
        calls = [
            (
                lua.PUSH_MANY,
                [k for q in group for k in self._keys_of(q)],
                storage.push_many_args(batch, group),
            )
            for group in groups
        ]
        await self._t().run_scripts(calls)

    # -- reserving -------------------------------------------------------------------------

    async def reserve_many(
        self, queues: Sequence[str] | None, *, lease: float, limit: int, wait: float = 0.0
    ) -> list[JobRecord]:
        _, records = await self._reserve(queues, lease, limit, wait)
        return records

    async def complete_and_reserve(
        self,
        record: JobRecord,
        queues: Sequence[str] | None,
        *,
        lease: float,
        limit: int = 1,
        wait: float = 0.0,
    ) -> tuple[bool, list[JobRecord]]:
        """``COMPLETE`` and the first ``RESERVE`` in one pipelined round trip, in that order.

        On a cluster the two name different slots, and the default (two calls) is used. If the
        round trip fails after Redis ran the reservation, the leased job is reclaimed when its
        lease runs out, as after any reservation whose reply was lost.
        """
        if self._t().cluster or record.lease_token is None or limit <= 0:
            return await super().complete_and_reserve(
                record, queues, lease=lease, limit=limit, wait=wait
            )
        settle = (lua.COMPLETE, self._keys_of(record.queue), [record.id, record.lease_token])
        flags, records = await self._reserve(queues, lease, limit, wait, settle=settle)
        return bool(flags[0]), records

    async def _reserve(
        self,
        queues: Sequence[str] | None,
        lease: float,
        limit: int,
        wait: float,
        *,
        settle: ScriptCall | None = None,
    ) -> tuple[Any, list[JobRecord]]:
        """Lease up to ``limit`` jobs, waiting up to ``wait`` seconds for the first.

        ``settle``, a script run just before the first reservation in the same round trip
        (outside a cluster only), and its reply comes back first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        best = queues is None
        names = await self._watched(queues)
        settled, (records, next_due) = await self._take(names, best, lease, limit, settle)
        while not records:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            timeout = min(remaining, self.options.block_for)
            if next_due is not None:
                timeout = min(timeout, next_due - now())
            if timeout < 0.002:  # shorter than Redis can block for: just look again
                _, (records, next_due) = await self._take(names, best, lease, limit)
            elif len(names) == 1 or not self._t().cluster:
                records, next_due = await self._wait_and_take(names, best, lease, limit, timeout)
            else:
                await self._t().block([self._keys_of(q)[_NOTIFY] for q in names], timeout)
                _, (records, next_due) = await self._take(names, best, lease, limit)
            if not records and best:
                names = await self._watched(queues)
        return settled, records

    async def _watched(self, queues: Sequence[str] | None) -> list[str]:
        if queues is not None:
            return list(dict.fromkeys(queues))
        loop = asyncio.get_running_loop()
        if loop.time() - self._all_read_at > _REFRESH_QUEUES:
            self._all_queues = await self._known_queues()
            self._all_read_at = loop.time()
        return sorted({*self._all_queues, self.options.queue})

    def _reserve_args(
        self, names: list[str], best: bool, lease: float, limit: int, *, server_clock: bool
    ) -> tuple[list[str], list[Any]]:
        keys = [k for q in names for k in self._keys_of(q)]
        at = "" if server_clock else repr(now())
        mode = "best" if best else "order"
        return keys, [at, repr(lease), limit, mode, new_token() + "-"]

    async def _take(
        self,
        names: list[str],
        best: bool,
        lease: float,
        limit: int,
        settle: ScriptCall | None = None,
    ) -> tuple[Any, tuple[list[JobRecord], float | None]]:
        """Lease up to ``limit`` jobs; with none, also the next instant work becomes due.

        ``settle`` runs first in the same round trip (not on a cluster); its reply comes first.
        """
        if settle is not None:
            keys, args = self._reserve_args(names, best, lease, limit, server_clock=False)
            settled, reply = await self._t().run_scripts([settle, (lua.RESERVE, keys, args)])
            return settled, await self._leased(names, reply)
        # On a cluster a script may name one slot only: one reservation per queue, in order.
        groups = [[q] for q in names] if self._t().cluster else [names]
        records: list[JobRecord] = []
        next_due: float | None = None
        for group in groups:
            keys, args = self._reserve_args(
                group, best, lease, limit - len(records), server_clock=False
            )
            reply = await self._t().run_script(lua.RESERVE, keys, args)
            found, due = await self._leased(group, reply)
            records += found
            if due is not None:
                next_due = due if next_due is None else min(next_due, due)
            if len(records) >= limit:
                break
        return None, (records, next_due)

    async def _wait_and_take(
        self, names: list[str], best: bool, lease: float, limit: int, timeout: float
    ) -> tuple[list[JobRecord], float | None]:
        """Block for a wake-up token, then reserve (one round trip on the native connection).

        The reservation waits behind the blocking pop on the server, so it reads the server's
        clock: the client cannot know when the wait will end.
        """
        keys, args = self._reserve_args(names, best, lease, limit, server_clock=True)
        notify = [self._keys_of(q)[_NOTIFY] for q in names]
        reply = await self._t().block_then_run(notify, timeout, lua.RESERVE, keys, args)
        return await self._leased(names, reply)

    async def _leased(
        self, names: list[str], reply: list[Any]
    ) -> tuple[list[JobRecord], float | None]:
        """Records from a RESERVE reply, and its next due instant."""
        next_due = float(reply[0]) if reply[0] else None
        until = float(reply[1])
        records = []
        for i in range(2, len(reply), 5):
            queue, job_id, body, attempts, token = reply[i : i + 5]
            token = storage.text(token)
            record = await self._decode(names[int(queue)], storage.text(job_id), body, token)
            if record is not None:
                record.attempts = int(attempts)
                record.lease_token = token
                record.reserved_until = until
                records.append(record)
        return records, next_due

    def _source(self, queue: str, job_id: str) -> str:
        """Where a record is stored, for error messages."""
        return f"Redis {self.description} key {self._keys_of(queue)[_JOBS]} field {job_id}"

    async def _decode(self, queue: str, job_id: str, body: Any, token: str) -> JobRecord | None:
        """Parse a leased record; a corrupt one goes to the failed set unchanged, loudly."""
        keys = self._keys_of(queue)
        try:
            return storage.decode(body, lambda: self._source(queue, job_id))
        except CorruptStoreError as e:
            # Its bytes are written back as they were (never "repaired"), so a person can
            # inspect them with HGET; the other jobs of this reservation carry on.
            log.error("queuekit: %s; moved to the failed set unchanged", e)
            args = [job_id, token, body, repr(now())]
            await self._t().run_script(lua.FAIL, keys, args)
            return None

    # -- settling a lease ------------------------------------------------------------------

    async def extend(self, record: JobRecord, *, lease: float) -> bool:
        if record.lease_token is None:
            return False
        until = now() + lease
        args = [record.id, record.lease_token, repr(until)]
        if not await self._t().run_script(lua.EXTEND, self._keys_of(record.queue), args):
            return False
        record.reserved_until = until
        return True

    async def complete(self, record: JobRecord) -> bool:
        if record.lease_token is None:
            return False
        args = [record.id, record.lease_token]
        flags = await self._t().run_script(lua.COMPLETE, self._keys_of(record.queue), args)
        return bool(flags[0])

    async def complete_many(self, records: Sequence[JobRecord]) -> list[bool]:
        by_queue: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            if record.lease_token is not None:
                by_queue.setdefault(record.queue, []).append(i)
        calls = []
        for queue, indexes in by_queue.items():
            args = [a for i in indexes for a in (records[i].id, records[i].lease_token)]
            calls.append((lua.COMPLETE, self._keys_of(queue), args))
        done = [False] * len(records)
        if calls:
            replies = await self._t().run_scripts(calls)
            for indexes, flags in zip(by_queue.values(), replies, strict=True):
                for i, flag in zip(indexes, flags, strict=True):
                    done[i] = bool(flag)
        return done

    async def release(
        self, record: JobRecord, *, delay: float = 0.0, error: str | None = None
    ) -> bool:
        if record.lease_token is None:
            return False
        at = now()
        stored = storage.unleased(record)
        stored.available_at = at + delay
        if error is not None:
            stored.last_error = error
        args = [record.id, record.lease_token, storage.body(stored), *storage.placement(stored, at)]
        return bool(await self._t().run_script(lua.RELEASE, self._keys_of(record.queue), args))

    async def fail(self, record: JobRecord, error: str) -> bool:
        if record.lease_token is None:
            return False
        stored = storage.unleased(record)
        stored.last_error = error
        stored.failed_at = now()
        args = [record.id, record.lease_token, storage.body(stored), repr(stored.failed_at)]
        return bool(await self._t().run_script(lua.FAIL, self._keys_of(record.queue), args))
