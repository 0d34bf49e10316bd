"""The Redis driver: the contract suite on the real server, on fakeredis (with Lua) and on a
private three-node Redis Cluster, then what is specific to Redis: configuration, key layout,
replayed pushes, corrupt records, connection errors, a silent server, many worker processes, a
worker killed mid-job, and a server killed and restarted mid-drain and while idle. Every test on
the shared server uses a key prefix of its own and deletes its keys afterwards; private servers
are killed in a finally block.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from queuekit.clock import now
from queuekit.errors import ConfigError, DriverError
from queuekit.manager import QueueManager
from queuekit.testing import ContractJob, DriverContract, make_record
from tests.services import REDIS_URL, require_service

redis = pytest.importorskip("redis")
fakeredis = pytest.importorskip("fakeredis")

from queuekit.drivers.redis import RedisDriver  # noqa: E402
from queuekit.drivers.redis_connection import RedisAddress  # noqa: E402
from queuekit.drivers.redis_scripts import KEY_NAMES, queue_keys  # noqa: E402

LEASE = 30.0


def _delete_prefix(client: Any, prefix: str) -> None:
    for pattern in (f"{{{prefix}:*", f"{prefix}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on the real server; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as e:
        require_service("Redis", e)
    name = f"qkt{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        _delete_prefix(client, name)
        client.close()


async def open_redis(prefix: str, **extra: Any) -> RedisDriver:
    """A connected driver on the real server under ``prefix``."""
    driver = RedisDriver({"url": REDIS_URL, "prefix": prefix, **extra})
    await driver.connect()
    return driver


def manager_config(prefix: str, **extra: Any) -> dict[str, Any]:
    """A QueueManager config on the real server under ``prefix``."""
    return {"queue": {"driver": "redis", "redis": {"url": REDIS_URL, "prefix": prefix, **extra}}}


class TestRedisDriver(DriverContract):
    @pytest.fixture
    async def driver(self, prefix: str) -> AsyncIterator[RedisDriver]:
        d = await open_redis(prefix)
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, prefix: str) -> Callable[[], Awaitable[RedisDriver]]:
        async def _open() -> RedisDriver:
            return await open_redis(prefix)

        return _open


class TestRedisDriverOnFakeredis(DriverContract):
    """The same contract through an injected redis-py client (fakeredis runs the Lua)."""

    @pytest.fixture
    def server(self) -> Any:
        return fakeredis.FakeServer()

    @pytest.fixture
    async def clients(self) -> AsyncIterator[list[Any]]:
        made: list[Any] = []
        yield made
        for client in made:
            await client.aclose()

    async def _open(self, server: Any, clients: list[Any]) -> RedisDriver:
        client = fakeredis.FakeAsyncRedis(server=server)
        clients.append(client)
        driver = RedisDriver({"prefix": "fake"}, client=client)
        await driver.connect()
        return driver

    @pytest.fixture
    async def driver(self, server: Any, clients: list[Any]) -> AsyncIterator[RedisDriver]:
        d = await self._open(server, clients)
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, server: Any, clients: list[Any]) -> Callable[[], Awaitable[RedisDriver]]:
        async def _open() -> RedisDriver:
            return await self._open(server, clients)

        return _open


class PrivateCluster:
    """Three ``redis-server`` processes in cluster mode (no replicas) on free loopback ports."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ports = [_free_port() for _ in range(3)]
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            require_service("redis-server and redis-cli", FileNotFoundError("not on PATH"))
        for port in self.ports:
            data = self.directory / str(port)
            data.mkdir(parents=True)
            # The bus port defaults to port + 10000, which a high free port would overflow.
            command = [
                server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                "--cluster-enabled", "yes", "--cluster-port", str(_free_port()),
                "--save", "", "--appendonly", "no",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )
        for port in self.ports:
            _wait_for_ping(port)
        nodes = [f"127.0.0.1:{port}" for port in self.ports]
        subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        for port in self.ports:
            client = redis.Redis(port=port)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    assert time.monotonic() < deadline, "the private cluster never came up"
                    time.sleep(0.1)
            finally:
                client.close()

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
        self.processes.clear()


def _wait_for_ping(port: int) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        try:
            if client.ping():
                return
        except redis.RedisError:
            time.sleep(0.05)
        finally:
            client.close()
    raise TimeoutError(f"redis-server on port {port} did not start")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """One private three-node Redis Cluster for this module; killed at the end."""
    private = PrivateCluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        private.start()
        yield private
    finally:
        private.kill()


class TestRedisDriverOnCluster(DriverContract):
    """The contract on a real Redis Cluster, through redis-py's ``RedisCluster`` client."""

    @pytest.fixture
    def cluster_prefix(self) -> str:
        return f"qkc{uuid.uuid4().hex[:10]}"

    async def _open(self, cluster: PrivateCluster, prefix: str) -> RedisDriver:
        driver = RedisDriver({"url": cluster.url, "cluster": True, "prefix": prefix})
        await driver.connect()
        return driver

    @pytest.fixture
    async def driver(
        self, cluster: PrivateCluster, cluster_prefix: str
    ) -> AsyncIterator[RedisDriver]:
        d = await self._open(cluster, cluster_prefix)
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(
        self, cluster: PrivateCluster, cluster_prefix: str
    ) -> Callable[[], Awaitable[RedisDriver]]:
        async def _open() -> RedisDriver:
            return await self._open(cluster, cluster_prefix)

        return _open


async def test_queues_spread_over_the_cluster_nodes(cluster: PrivateCluster) -> None:
    driver = RedisDriver({"url": cluster.url, "cluster": True, "prefix": "spread"})
    await driver.connect()
    try:
        names = [f"q{i}" for i in range(12)]
        await driver.push_many([make_record(i, queue=q) for i, q in enumerate(names)])
        owners = set()
        for name in names:
            slot = redis.cluster.key_slot(queue_keys("spread", name)[0].encode())
            assert {redis.cluster.key_slot(k.encode()) for k in queue_keys("spread", name)} == {
                slot
            }, "every key of a queue is in one slot"
            owners.add(slot * 3 // 16384)
        assert len(owners) > 1, "the queues live on several nodes"
        waiting = asyncio.ensure_future(
            driver.reserve(["empty-a", "empty-b"], lease=LEASE, wait=10)
        )
        await asyncio.sleep(0.2)
        late = make_record(99, queue="empty-b")
        await driver.push(late)
        got = await asyncio.wait_for(waiting, 15)
        assert got is not None and got.id == late.id, "a wait over several slots wakes"
        taken = await driver.reserve_many(None, lease=LEASE, limit=20)
        assert sorted(r.payload["n"] for r in taken) == list(range(12))
    finally:
        await driver.close()


# -- configuration --------------------------------------------------------------------------


def test_seed_config_and_named_connections() -> None:
    seed = RedisDriver({"connection": "default", "queue": "default", "retry_after": 90})
    assert seed.description == "redis://127.0.0.1:6379/0"
    assert seed.default_lease == 90.0
    named = RedisDriver(
        {
            "connection": "jobs",
            "connections": {"jobs": "rediss://:s3cret@cache.internal:6380/3?ssl_cert_reqs=none"},
        }
    )
    assert named.description == "rediss://cache.internal:6380/3", "no password in messages"
    address = RedisAddress.parse("rediss://user:s3cret@h:6380/3?ssl_cert_reqs=none")
    assert (address.username, address.password, address.db) == ("user", "s3cret", 3)
    assert address.tls and not address.tls_verify
    assert RedisAddress.parse("unix:///tmp/r.sock?db=2").description == "unix:///tmp/r.sock?db=2"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"connection": "nope", "connections": {"a": "redis://x"}}, "queue.redis.connection"),
        ({"url": "http://:pw@host:1/0"}, r"queue.redis.url: .*http://:\*\*\*@host"),
        ({"url": "redis://host:port/0"}, "queue.redis.url"),
        ({"retry_after": 0}, "queue.redis.retry_after"),
        ({"block_for": -1}, "queue.redis.block_for"),
        ({"bogus": 1}, "queue.redis.bogus"),
    ],
)
def test_bad_options_name_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RedisDriver(options)


def test_manager_picks_the_driver_by_config(prefix: str) -> None:
    manager = QueueManager(manager_config(prefix, retry_after=12))
    assert isinstance(manager.driver, RedisDriver)
    assert manager.driver.default_lease == 12.0


# -- layout and behaviour specific to Redis ------------------------------------------------


async def test_every_key_of_a_queue_shares_its_hash_tag(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        await driver.push(make_record(1, queue="mail"))
        await driver.push(make_record(2, queue="mail", available_at=now() + 60))
        got = await driver.reserve(["mail"], lease=LEASE)
        assert got is not None
        await driver.fail(got, "x")
        await driver.push(make_record(3, queue="mail"))
        await driver.reserve(["mail"], lease=LEASE)
    finally:
        await driver.close()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = sorted(k.decode() for k in client.scan_iter(match=f"*{prefix}*"))
    finally:
        client.close()
    tagged = [k for k in keys if k.startswith(f"{{{prefix}:mail}}:")]
    assert sorted(set(keys) - set(tagged)) == [f"{prefix}:queues"]
    assert set(tagged) <= set(queue_keys(prefix, "mail"))
    assert len(KEY_NAMES) == 6


async def test_a_replayed_push_is_stored_once(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        record = make_record(1)
        assert await driver.push(record) is True
        assert await driver.push(record) is True, "a replay after a lost reply still succeeds"
        batch = [make_record(2), make_record(3, available_at=now() + 60)]
        await driver.push_many(batch)
        await driver.push_many(batch)
        stats = (await driver.stats(["default"]))["default"]
        assert (stats["pending"], stats["delayed"]) == (2, 1)
        assert len(await driver.reserve_many(["default"], lease=LEASE, limit=10)) == 2
    finally:
        await driver.close()


async def test_a_batch_over_several_queues_is_one_atomic_step(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        bad = make_record(9, queue="b", payload={"n": object()})
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is stored
            await driver.push_many([make_record(1, queue="a"), bad, make_record(2, queue="c")])
        assert await driver.reserve(None, lease=LEASE) is None
        batch = [make_record(i, queue=q) for i, q in enumerate("abcab")]
        await driver.push_many(batch)
        stats = await driver.stats(["a", "b", "c"])
        assert {q: s["pending"] for q, s in stats.items()} == {"a": 2, "b": 2, "c": 1}
    finally:
        await driver.close()


async def test_a_large_batch_over_queues_with_delays_keeps_every_job_in_place(
    prefix: str,
) -> None:
    # 1,500 jobs over two queues, a third of them delayed: the script's argument slices (a
    # thousand at a time) and the per-queue headers are crossed several times.
    driver = await open_redis(prefix)
    try:
        t = now()
        batch = [
            make_record(
                i,
                queue="ab"[i % 2],
                priority=i % 3,
                available_at=t + 3600 if i % 3 == 0 else t - 1 + i * 1e-4,
            )
            for i in range(1500)
        ]
        await driver.push_many(batch)
        await driver.push_many(batch)  # a replay stores nothing
        stats = await driver.stats(["a", "b"])
        assert {q: (s["pending"], s["delayed"]) for q, s in stats.items()} == {
            "a": (500, 250),
            "b": (500, 250),
        }
        got = await driver.reserve_many(["a"], lease=LEASE, limit=1000)
        expected = sorted(
            (r for r in batch if r.queue == "a" and r.available_at < t),
            key=lambda r: (-r.priority, r.available_at),
        )
        assert [r.id for r in got] == [r.id for r in expected]
        assert [r.payload for r in got] == [r.payload for r in expected]
    finally:
        await driver.close()


async def test_non_string_keys_are_stored_as_record_dumps_writes_them(prefix: str) -> None:
    driver = await open_redis(prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        record = make_record(1, payload={"n": 1, "by_id": {7: "x"}})
        record.meta = {1: True}
        await driver.push_many([record])
        stored = await client.hget(queue_keys(prefix, "default")[0], record.id)
        assert json.loads(stored) == json.loads(record.dumps())
        got = await driver.reserve(["default"], lease=LEASE)
        assert got is not None and got.payload["by_id"] == {"7": "x"} and got.meta == {"1": True}
    finally:
        await client.aclose()
        await driver.close()


async def test_complete_and_reserve_is_one_round_trip(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        await driver.push_many([make_record(1), make_record(2)])
        first = await driver.reserve(["default"], lease=LEASE)
        assert first is not None
        transport = driver._t()
        calls: list[str] = []
        for name in ("execute", "run_script", "run_scripts", "block", "block_then_run"):
            original = getattr(transport, name)

            def counting(*args: Any, _name: str = name, _call: Any = original) -> Any:
                calls.append(_name)
                return _call(*args)

            setattr(transport, name, counting)
        completed, taken = await driver.complete_and_reserve(first, ["default"], lease=LEASE)
        assert completed is True and len(taken) == 1 and taken[0].id != first.id
        assert calls == ["run_scripts"], "the completion and the reservation share one pipeline"
        assert await driver.complete(first) is False
    finally:
        await driver.close()


async def test_scripts_a_server_forgot_are_loaded_again() -> None:
    # Every way a script is sent (alone, in a pipeline, behind a blocking pop) meets NOSCRIPT.
    client = fakeredis.FakeAsyncRedis()
    driver = RedisDriver({"prefix": "noscript"}, client=client)
    loaded: list[str] = []
    transport = driver._t()
    load_and_run = transport._load_and_run

    async def counting(script: Any, keys: Any, args: Any) -> Any:
        loaded.append(script.name)
        return await load_and_run(script, keys, args)

    transport._load_and_run = counting  # type: ignore[method-assign]
    try:
        await driver.connect()
        await client.script_flush()
        await driver.push(make_record(1))
        await client.script_flush()
        await driver.push_many([make_record(2, queue="a"), make_record(3, queue="b")])
        await client.script_flush()
        stats = await driver.stats(["default", "a", "b"])
        assert [s["pending"] for s in stats.values()] == [1, 1, 1]
        await client.script_flush()
        first = await driver.reserve(["default"], lease=LEASE)
        assert first is not None and first.payload == {"n": 1}
        await client.script_flush()
        completed, taken = await driver.complete_and_reserve(first, ["a"], lease=LEASE)
        assert completed is True and [r.payload for r in taken] == [{"n": 2}]
        assert loaded == ["push", "push_many", "stats", "reserve", "complete", "reserve"]
        loaded.clear()

        waiting = asyncio.create_task(driver.reserve(["c"], lease=LEASE, wait=5))
        await asyncio.sleep(0.2)
        await client.script_flush()
        await client.rpush(queue_keys("noscript", "c")[-1], "1")  # a wake-up, then the job
        await driver.push(make_record(4, queue="c"))
        got = await asyncio.wait_for(waiting, 5)
        assert got is not None and got.payload == {"n": 4}
        assert sorted(loaded) == ["push", "reserve"], "the reservation behind the pop too"
    finally:
        await driver.close()
        await client.aclose()


async def test_every_queue_takes_the_best_job_across_queues(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        t = now()
        low = make_record(1, queue="q1", available_at=t - 10)
        high = make_record(2, queue="q2", priority=5, available_at=t)
        await driver.push(low)
        await driver.push(high)
        got = await driver.reserve_many(None, lease=LEASE, limit=2)
        assert [r.id for r in got] == [high.id, low.id]
    finally:
        await driver.close()


async def test_extreme_priorities_and_instants_keep_their_order(prefix: str) -> None:
    driver = await open_redis(prefix)
    try:
        t = now()
        records = [
            make_record(0, priority=10**12, available_at=t),
            make_record(1, priority=10**12, available_at=t + 1e-5 - 1),
            make_record(2, priority=1, available_at=0.0),
            make_record(3, priority=1, available_at=0.0),
            make_record(4, priority=-(10**12), available_at=t - 1e6),
        ]
        for record in records:
            await driver.push(record)
        got = await driver.reserve_many(["default"], lease=LEASE, limit=10)
        assert [r.payload["n"] for r in got] == [1, 0, 2, 3, 4]
    finally:
        await driver.close()


async def test_a_corrupt_record_is_moved_aside_unchanged(
    prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = await open_redis(prefix)
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        bad, good = make_record(1), make_record(2)
        await driver.push_many([bad, good])
        jobs_key = queue_keys(prefix, "default")[0]
        await client.hset(jobs_key, bad.id, b"{not json")
        with caplog.at_level(logging.ERROR, logger="queuekit.drivers.redis"):
            got = await driver.reserve_many(["default"], lease=LEASE, limit=5)
            assert [r.id for r in got] == [good.id], "the good job of the batch is handed out"
            assert await driver.failed() == [], "a corrupt failed record is skipped, loudly"
        assert f"key {jobs_key} field {bad.id}: not valid JSON" in caplog.text
        assert await client.hget(jobs_key, bad.id) == b"{not json", "the bytes are kept"
        stats = (await driver.stats(["default"]))["default"]
        assert (stats["failed"], stats["reserved"], stats["pending"]) == (1, 1, 0)
        assert await driver.forget_failed() == 1
    finally:
        await client.aclose()
        await driver.close()


async def test_an_unreachable_server_raises_driver_error_naming_it() -> None:
    port = _free_port()
    driver = RedisDriver({"url": f"redis://127.0.0.1:{port}/0", "connect_timeout": 2})
    with pytest.raises(DriverError, match=rf"redis://127.0.0.1:{port}/0 is unreachable"):
        await driver.connect()
    with pytest.raises(DriverError, match=f"127.0.0.1:{port}"):
        await driver.push(make_record())
    await driver.close()


async def test_a_wrong_password_is_a_clear_error(prefix: str) -> None:
    driver = RedisDriver({"url": REDIS_URL.replace("redis://", "redis://nobody:wrong@", 1)})
    with pytest.raises(DriverError, match="AUTH failed"):
        await driver.connect()
    await driver.close()


async def test_an_injected_client_stays_open_after_close() -> None:
    client = fakeredis.FakeAsyncRedis()
    driver = RedisDriver({"prefix": "inj"}, client=client)
    await driver.connect()
    await driver.push(make_record())
    await driver.close()
    assert await client.ping() is True
    await client.aclose()


async def test_a_manager_worker_drains_through_reserve_many(prefix: str) -> None:
    ContractJob.ran.clear()
    async with QueueManager(manager_config(prefix)) as manager:
        await manager.dispatch_batch([ContractJob(n=i) for i in range(50)])
        summary = await manager.start_worker(concurrency=8, max_jobs=50, timeout=60)
        assert summary.completed == 50
        assert sorted(ContractJob.ran) == list(range(50))
        assert (await manager.stats(["default"]))["default"] == {
            "pending": 0,
            "delayed": 0,
            "reserved": 0,
            "failed": 0,
        }


# -- many processes, crashes and a dying server --------------------------------------------


@pytest.mark.slow
def test_three_worker_processes_drain_3000_jobs(prefix: str, tmp_path: Path) -> None:
    from queuekit.testing.multiprocess import drain_in_processes

    report = drain_in_processes(
        manager_config(prefix),
        jobs=3000,
        processes=3,
        log_path=tmp_path / "probe.log",
        concurrency=4,
        timeout=150,
    )
    assert report.missing == []
    assert report.overlapping == []
    assert report.repeated == [], "no lease ran out, so no job may run twice"
    assert len(report.per_process) == 3, f"every worker took jobs: {report.per_process}"


@pytest.mark.slow
def test_a_killed_worker_job_runs_again_after_its_lease(prefix: str, tmp_path: Path) -> None:
    from queuekit.testing.multiprocess import kill_mid_job

    report = kill_mid_job(
        manager_config(prefix, retry_after=1.0), log_path=tmp_path / "probe.log", lease=1.0
    )
    (runs,) = report.runs.values()
    assert [attempt for _, attempt, _, _ in runs] == [1, 2]
    assert runs[0][3] is None, "the killed run never finished"
    assert runs[1][3] is not None, "the re-run finished"
    assert runs[0][0] != runs[1][0], "another process ran it again"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateRedis:
    """A ``redis-server`` of the test's own on a free loopback port, fsyncing every write."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require_service("redis-server binary", FileNotFoundError("redis-server not on PATH"))
        # appendfsync always: a write is on disk before its reply, so even SIGKILL loses
        # nothing that was acknowledged.
        self.process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                client = redis.Redis(port=self.port)
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass  # still loading the append-only file
                finally:
                    client.close()
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"private redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis-data")
    server.directory.mkdir()
    try:
        server.start()
        yield server
    finally:
        server.kill()


async def test_a_silent_server_is_given_up_on_after_socket_timeout(
    private_redis: PrivateRedis,
) -> None:
    driver = RedisDriver({"url": private_redis.url, "socket_timeout": 1, "block_for": 1})
    await driver.connect()
    assert private_redis.process is not None
    private_redis.process.send_signal(signal.SIGSTOP)  # alive, connected, answering nothing
    try:
        with pytest.raises(DriverError, match=rf"Redis {private_redis.url}: no reply within 1s"):
            await asyncio.wait_for(driver.push(make_record()), 30)
        with pytest.raises(DriverError, match=rf"Redis {private_redis.url}"):
            await asyncio.wait_for(driver.reserve(["default"], lease=LEASE, wait=0.5), 30)
    finally:
        private_redis.process.send_signal(signal.SIGCONT)
    await driver.push(make_record(7))  # once the server answers again, the driver reconnects
    got = await driver.reserve(["default"], lease=LEASE)
    assert got is not None and got.payload == {"n": 7}
    await driver.close()


@pytest.mark.slow
def test_a_server_killed_mid_drain_loses_nothing_acknowledged(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    from queuekit.testing.jobs import ProbeJob
    from queuekit.testing.multiprocess import _count_ends, read_log, start_worker_process

    log_path = tmp_path / "probe.log"
    config = {
        "queue": {
            "driver": "redis",
            "redis": {"url": private_redis.url, "retry_after": 2, "connect_timeout": 1},
        }
    }

    async def dispatch(count: int) -> list[str]:
        async with QueueManager(config) as manager:
            probes = [ProbeJob(log_path=str(log_path), sleep=0.002) for _ in range(count)]
            return await manager.dispatch_batch(probes)

    def unfinished(ids: list[str]) -> list[str]:
        runs, _ = read_log(log_path)
        return [i for i in ids if not any(end is not None for *_, end in runs.get(i, []))]

    def wait_for(ids: list[str], deadline: float) -> None:
        while unfinished(ids):
            assert worker.poll() is None, "the worker must survive the outage"
            assert time.monotonic() < deadline, "the worker did not resume after the restart"
            time.sleep(0.05)

    ids = asyncio.run(dispatch(400))
    worker = start_worker_process(config, concurrency=2)
    stderr = ""
    try:
        deadline = time.monotonic() + 60
        while _count_ends(log_path) < 50:
            assert worker.poll() is None and time.monotonic() < deadline, "worker never started"
            time.sleep(0.01)
        # 1. Killed while the worker is busy: its acknowledgements and reservations fail.
        private_redis.kill()
        time.sleep(1.0)  # the worker runs into the dead server, logs it and backs off
        private_redis.start()
        ids += asyncio.run(dispatch(100))
        wait_for(ids, deadline + 60)
        # 2. Killed while the worker is idle, blocked in BLPOP.
        time.sleep(0.5)
        private_redis.kill()
        time.sleep(0.5)
        private_redis.start()
        later = asyncio.run(dispatch(20))
        wait_for(later, time.monotonic() + 60)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            stderr = worker.communicate(timeout=20)[1].decode(errors="replace")
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.communicate(timeout=10)
    assert unfinished(ids + later) == [], "every acknowledged dispatch ran to the end"
    assert f"Redis {private_redis.url}" in stderr, "the worker logged the lost server"
