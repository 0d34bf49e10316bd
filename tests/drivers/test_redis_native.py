"""The Redis driver's own connections (``NativeTransport``): which URLs use them, how concurrent
requests share one connection, what a cancelled or dropped request leaves behind, and every part
of a URL (password, database, Unix socket, TLS with and without certificate checks) against
private ``redis-server`` processes the tests start and kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from queuekit.errors import DriverError
from queuekit.testing import make_record
from tests.services import REDIS_URL, require_service

redis = pytest.importorskip("redis")
pytest.importorskip("hiredis")
fakeredis = pytest.importorskip("fakeredis")

from queuekit.drivers.redis import RedisDriver  # noqa: E402
from queuekit.drivers.redis_connection import ClientTransport  # noqa: E402
from queuekit.drivers.redis_native import NativeTransport, _pack  # noqa: E402
from tests.drivers.test_redis import LEASE, _free_port, prefix  # noqa: E402, F401


@pytest.fixture
async def transport(prefix: str) -> AsyncIterator[NativeTransport]:  # noqa: F811
    driver = RedisDriver({"url": REDIS_URL, "prefix": prefix})
    try:
        await driver.connect()
    except DriverError as e:
        require_service("Redis", e)
    t = driver._t()
    assert isinstance(t, NativeTransport)
    yield t
    await driver.close()


def _kill_client(client_id: int) -> None:
    """Drop one connection from the server's side."""
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        admin.client_kill_filter(_id=client_id)
    finally:
        admin.close()


# -- which transport ----------------------------------------------------------------------------


def test_a_url_uses_native_connections_a_cluster_or_client_uses_redis_py(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert isinstance(RedisDriver({"url": REDIS_URL})._t(), NativeTransport)
    assert isinstance(RedisDriver({"url": REDIS_URL, "cluster": True})._t(), ClientTransport)
    assert isinstance(RedisDriver({}, client=fakeredis.FakeAsyncRedis())._t(), ClientTransport)
    # Without hiredis the driver falls back to redis-py for a plain URL too.
    monkeypatch.setitem(sys.modules, "queuekit.drivers.redis_native", None)
    fallback = RedisDriver({"url": REDIS_URL})._t()
    assert isinstance(fallback, ClientTransport) and fallback.description == (
        "redis://127.0.0.1:6379/0"
    )


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.connection import PythonRespSerializer

    plain = PythonRespSerializer(
        buffer_cutoff=6000, encode=redis.connection.Encoder("utf-8", "strict", False).encode
    )
    commands = [
        ("EVALSHA", "a" * 40, 2, "{q}:jobs", "{q}:ready", b"\x00\xffbytes", "caf\u00e9", -3, 2.5),
        ("RPUSH", "list", bytearray(b"array"), memoryview(b"view"), 0.1, 10**20),
        (b"SET", "k", "v" * 70_000),
    ]
    for command in commands:
        assert _pack(command) == b"".join(plain.pack(*command)), command[0]


# -- one connection, many requests --------------------------------------------------------------


async def test_concurrent_requests_share_one_connection_and_get_their_own_replies(
    transport: NativeTransport,
) -> None:
    replies = await asyncio.gather(*(transport.execute("ECHO", str(i)) for i in range(500)))
    assert replies == [str(i).encode() for i in range(500)]
    ids = await asyncio.gather(*(transport.execute("CLIENT", "ID") for _ in range(20)))
    assert len(set(ids)) == 1, "pipelined on the one shared connection"


async def test_a_cancelled_request_leaves_the_next_reply_to_the_next_request(
    transport: NativeTransport,
    prefix: str,  # noqa: F811
) -> None:
    # The BLPOP holds the shared connection for 0.3 s; its caller gives up after 0.05 s. Its
    # reply (nil) still arrives first and must not be taken for the ECHO's.
    slow = asyncio.create_task(transport.execute("BLPOP", f"{prefix}:nothing", "0.3"))
    await asyncio.sleep(0.05)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await asyncio.wait_for(transport.execute("ECHO", "after"), 5) == b"after"


async def test_an_error_reply_names_the_command_and_the_connection_carries_on(
    transport: NativeTransport,
) -> None:
    with pytest.raises(DriverError, match=r"redis://127.0.0.1:6379/0: NOSUCHCOMMAND failed: .*"):
        await transport.execute("NOSUCHCOMMAND")
    assert await transport.execute("PING") == b"PONG"


async def test_a_connection_the_server_drops_is_opened_again(
    transport: NativeTransport,
    prefix: str,  # noqa: F811
) -> None:
    first = await transport.execute("CLIENT", "ID")
    _kill_client(first)
    await asyncio.sleep(0.1)
    second = await transport.execute("CLIENT", "ID")
    assert second != first
    # A request in flight when its connection drops fails with DriverError, the next succeeds.
    waiting = asyncio.create_task(transport.execute("BLPOP", f"{prefix}:nothing", "5"))
    await asyncio.sleep(0.1)
    _kill_client(second)
    with pytest.raises(DriverError, match=r"Redis redis://127.0.0.1:6379/0 is unreachable"):
        await asyncio.wait_for(waiting, 5)
    assert await transport.execute("PING") == b"PONG"


async def test_a_cancelled_blocking_wait_never_hands_its_connection_on(prefix: str) -> None:  # noqa: F811
    driver = RedisDriver({"url": REDIS_URL, "prefix": prefix})
    await driver.connect()
    admin = redis.Redis.from_url(REDIS_URL)
    try:
        transport = driver._t()
        assert isinstance(transport, NativeTransport)
        waiting = asyncio.create_task(driver.reserve(["q"], lease=LEASE, wait=5))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        assert transport._idle == [], "a connection still blocked on the server is closed"
        await driver.push(make_record(1, queue="q"))
        got = await driver.reserve(["q"], lease=LEASE, wait=5)
        assert got is not None and got.payload == {"n": 1}
        assert len(transport._idle) == 0  # a job was there: no wait, no blocking connection
        later = asyncio.create_task(driver.reserve(["q"], lease=LEASE, wait=5))
        await asyncio.sleep(0.2)
        await driver.push(make_record(2, queue="q"))
        got = await asyncio.wait_for(later, 5)
        assert got is not None and got.payload == {"n": 2}
        assert len(transport._idle) == 1, "a wait that ended normally keeps its connection"
        deadline = time.monotonic() + 5
        while any(c["cmd"] == "blpop" for c in admin.client_list()):
            assert time.monotonic() < deadline, "a BLPOP of the cancelled wait is still open"
            await asyncio.sleep(0.05)
    finally:
        admin.close()
        await driver.close()


def test_a_driver_used_from_one_event_loop_after_another_opens_new_connections(
    prefix: str,  # noqa: F811
) -> None:
    # As a script or a synchronous web view does: each asyncio.run is a new loop, and the
    # connections of the last one (gone with it) must not be handed to the next.
    driver = RedisDriver({"url": REDIS_URL, "prefix": prefix})

    async def push(n: int) -> None:
        await driver.push(make_record(n))

    async def take() -> dict[str, int] | None:
        got = await driver.reserve(["default"], lease=LEASE, wait=0.3)  # waits on a blocker too
        return None if got is None else got.payload

    asyncio.run(push(1))
    assert asyncio.run(take()) == {"n": 1}
    assert asyncio.run(take()) is None, "a wait on a blocking connection of the new loop"
    asyncio.run(push(2))
    assert asyncio.run(take()) == {"n": 2}
    asyncio.run(driver.close())


# -- every part of a URL, on private servers ----------------------------------------------------


class Server:
    """A private ``redis-server`` started with extra arguments; ready once its log says so."""

    def __init__(self, directory: Path, *args: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            require_service("redis-server binary", FileNotFoundError("redis-server not on PATH"))
        directory.mkdir(parents=True, exist_ok=True)
        self.log = directory / "redis.log"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(directory), "--logfile", str(self.log), *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while "ready to accept connections" not in self._log_text().lower():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"private redis-server did not start:\n{self._log_text()}")
            time.sleep(0.05)

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(tmp_path / f"server{len(started)}", *args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


async def _round_trip(url: str) -> None:
    """Push and lease one job through a driver on ``url``."""
    driver = RedisDriver({"url": url, "prefix": "native", "connect_timeout": 5})
    try:
        await driver.push(make_record(5))
        got = await driver.reserve(["default"], lease=LEASE, wait=1)
        assert got is not None and got.payload == {"n": 5}
        assert await driver.complete(got) is True
    finally:
        await driver.close()


async def test_password_user_and_database_come_from_the_url(
    start_server: Callable[..., Server],
) -> None:
    port = _free_port()
    start_server("--port", str(port), "--requirepass", "s3cret")
    await _round_trip(f"redis://:s3cret@127.0.0.1:{port}/3")
    await _round_trip(f"redis://default:s3cret@127.0.0.1:{port}/0")
    check = redis.Redis(port=port, password="s3cret", db=3)
    try:
        assert check.exists("native:queues") == 1, "the jobs went to database 3"
    finally:
        check.close()
    for url in (f"redis://:wrong@127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"):
        driver = RedisDriver({"url": url, "connect_timeout": 5})
        # Without a password the server refuses the first command instead of AUTH.
        with pytest.raises(DriverError, match=rf"Redis redis://127.0.0.1:{port}/0: "):
            await driver.push(make_record())
        await driver.close()


async def test_a_database_the_server_does_not_have_is_a_clear_error(
    start_server: Callable[..., Server],
) -> None:
    port = _free_port()
    start_server("--port", str(port), "--databases", "2")
    driver = RedisDriver({"url": f"redis://127.0.0.1:{port}/5", "connect_timeout": 5})
    with pytest.raises(DriverError, match=r"SELECT 5 failed: .*DB index is out of range"):
        await driver.connect()
    await driver.close()


async def test_a_unix_socket_url(start_server: Callable[..., Server], tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    start_server("--port", "0", "--unixsocket", str(path))
    await _round_trip(f"unix://{path}?db=2")


def _certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no certificate for the TLS test")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


async def test_tls_with_and_without_certificate_checks(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    cert, key = _certificate(tmp_path)
    port = _free_port()
    try:
        start_server(
            "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
            "--tls-auth-clients", "no",
        )  # fmt: skip
    except RuntimeError as e:
        if "TLS" in str(e) and "not" in str(e):
            pytest.skip(f"this redis-server has no TLS: {e}")
        raise
    base = f"rediss://127.0.0.1:{port}/0"
    await _round_trip(f"{base}?ssl_ca_certs={cert}")
    await _round_trip(f"{base}?ssl_cert_reqs=none")
    driver = RedisDriver({"url": base, "connect_timeout": 5})
    with pytest.raises(DriverError, match=rf"Redis {base} is unreachable .*certificate"):
        await driver.connect()
    await driver.close()


async def test_a_server_that_never_answers_the_connection_is_given_up_on() -> None:
    # A listening socket nobody accepts from: TCP connects, TLS would hang; here AUTH hangs.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        driver = RedisDriver({"url": f"redis://:pw@127.0.0.1:{port}/0", "connect_timeout": 0.5})
        started = time.monotonic()
        with pytest.raises(DriverError, match=rf"127.0.0.1:{port}/0 is unreachable .*0.5s"):
            await driver.connect()
        assert time.monotonic() - started < 5

        # The half-set-up connection was closed, not left open: its peer reads the end of it
        # (in a thread, so the loop can run the close meanwhile).
        def read_to_end() -> bytes:
            listener.settimeout(5)
            peer, _ = listener.accept()
            with peer:
                peer.settimeout(5)
                received = b""
                with contextlib.suppress(ConnectionResetError):
                    while chunk := peer.recv(4096):
                        received += chunk
                return received

        received = await asyncio.to_thread(read_to_end)
        assert received.startswith(b"*2\r\n$4\r\nAUTH\r\n"), received
        await driver.close()
    finally:
        listener.close()
