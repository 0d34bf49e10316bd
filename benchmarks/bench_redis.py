"""queuekit's Redis driver beside the Redis job queues users would otherwise pick.

Every system runs on one private ``redis-server`` (no persistence, flushed between measurements)
that this script starts on a free loopback port and stops at the end, with no-op jobs:

- dispatch N jobs one by one, and as one batch where the library has a batch API, timed from
  after each system's client is set up: every system first sends one warm-up job (not counted),
  which imports what it imports lazily, connects and loads its scripts, so the figures compare
  the steady cost of dispatching, the same way for every library;
- drain N queued jobs with one worker process, timed from spawning it (start-up included) until
  a sentinel job dispatched last has run;
- redis-py's blocking client awaiting one LPUSH per job, its asyncio client awaiting one
  EVALSHA per job, and a bare ``asyncio.Protocol`` with hiredis doing the same, timed the same
  way: not job queues, but the floors of one-by-one dispatch for a synchronous library (Huey's
  enqueue is one LPUSH), for an asyncio one on redis-py, and for any asyncio client (queuekit's
  dispatch is one script run on connections of its own);
- enqueue-to-start latency (p50/p99) over ``--latency-jobs`` jobs sent one at a time to an idle
  worker (each job reports ``time.time() - t0`` through Redis).

queuekit's worker runs at concurrency 16 (``BENCH_QK_CONCURRENCY``) for both drain and latency, as
one worker deployed for I/O-bound jobs would; at concurrency 1 its p50 latency is lower.

Each measurement runs in a fresh child process (``--child SYSTEM ACTION``); a peer that cannot
share this interpreter's packages (arq pins redis<6) runs under ``--python arq=/path/to/python``.
Peers that are not installed are skipped. Usage::

    python benchmarks/bench_redis.py                # N = 10,000
    python benchmarks/bench_redis.py --quick        # N = 1,000, 50 latency jobs
    python benchmarks/bench_redis.py --python arq=/tmp/venv/bin/python --peers huey,arq

Figures depend on the machine's load; compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

HERE = Path(__file__).resolve()
MODULE = "benchmarks.bench_redis"
QUEUE = "bench"
DONE_KEY = "bench:done"
LATENCY_KEY = "bench:latency"
QK_CONCURRENCY = int(os.environ.get("BENCH_QK_CONCURRENCY", "16"))

# -- jobs shared by the peers: a no-op, a sentinel and a latency probe ------------------------

_client: Any = None


def _redis(url: str) -> Any:
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(url)
    return _client


def _url() -> str:
    return os.environ["BENCH_REDIS_URL"]


def noop(*args: Any, **kwargs: Any) -> None:
    """The measured job: does nothing."""


def finish(*args: Any, **kwargs: Any) -> None:
    """Dispatched after the measured jobs; marks the queue as drained."""
    _redis(_url()).set(DONE_KEY, "1")


def probe(t0: float, *args: Any, **kwargs: Any) -> None:
    """Reports how long after ``t0`` (taken just before its dispatch) the job started."""
    _redis(_url()).rpush(LATENCY_KEY, repr(time.time() - t0))


async def _anoop(ctx: Any, *args: Any, **kwargs: Any) -> None:
    noop()


async def _afinish(ctx: Any, *args: Any, **kwargs: Any) -> None:
    finish()


async def _aprobe(ctx: Any, t0: float, *args: Any, **kwargs: Any) -> None:
    probe(t0)


class Stopwatch:
    """Times one measurement: a system starts it once it is set up and stops it when done."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.seconds: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        assert self.started is not None, "stopped before it was started"
        self.seconds = time.perf_counter() - self.started


#: Used where nothing is timed (filling a queue before a drain).
UNTIMED = Stopwatch()

# -- one adapter per system: dispatch / batch / fill / serve / send_probe ----------------------


class System:
    """How to drive one library; every method runs inside a child process."""

    name = ""
    module = ""
    has_batch = False
    #: The measurements this system takes part in.
    metrics: tuple[str, ...] = ("dispatch", "batch", "drain", "latency")
    #: (kind, key) of the list/zset holding queued jobs, to report progress after a timeout.
    pending_key: tuple[str, str] = ("list", "")

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        """Queue one warm-up job, start ``watch``, queue ``n`` no-op jobs one call at a time,
        stop ``watch``."""
        raise NotImplementedError

    def batch(self, n: int, watch: Stopwatch) -> None:
        """Like ``dispatch``, with the library's batch call (the warm-up is a batch of one)."""
        raise NotImplementedError

    def fill(self, n: int) -> None:
        """Queue ``n`` no-ops then the sentinel, as fast as possible (not timed)."""
        if self.has_batch:
            self.batch(n, UNTIMED)
        else:
            self.dispatch(n, UNTIMED)
        self.send_finish()

    def send_finish(self) -> None:
        """Queue the sentinel."""
        raise NotImplementedError

    def send_probe(self, t0: float) -> None:
        """Queue one latency probe."""
        raise NotImplementedError

    def serve(self) -> None:
        """Run one worker process until SIGTERM."""
        raise NotImplementedError


class Queuekit(System):
    name, module, has_batch = "queuekit", "queuekit", True
    pending_key = ("zset", f"{{queuekit:{QUEUE}}}:ready")

    def __init__(self) -> None:
        from queuekit import QueueJob

        class Noop(QueueJob):
            job_name: ClassVar[str] = "bench.noop"
            queue: ClassVar[str] = QUEUE
            i: int = 0

            async def handle(self) -> None:
                noop()

        class Finish(QueueJob):
            job_name: ClassVar[str] = "bench.finish"
            queue: ClassVar[str] = QUEUE

            async def handle(self) -> None:
                finish()

        class Probe(QueueJob):
            job_name: ClassVar[str] = "bench.probe"
            queue: ClassVar[str] = QUEUE
            t0: float

            async def handle(self) -> None:
                probe(self.t0)

        self.jobs = (Noop, Finish, Probe)
        self.config = {"queue": {"driver": "redis", "redis": {"url": _url()}}}

    def _run(self, body: Callable[[Any], Any]) -> None:
        from queuekit import QueueManager

        async def main() -> None:
            async with QueueManager(self.config) as manager:
                await body(manager)

        asyncio.run(main())

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        noop_job = self.jobs[0]

        async def body(manager: Any) -> None:
            await manager.dispatch(noop_job(i=-1))
            watch.start()
            for i in range(n):
                await manager.dispatch(noop_job(i=i))
            watch.stop()

        self._run(body)

    def batch(self, n: int, watch: Stopwatch) -> None:
        noop_job = self.jobs[0]

        async def body(manager: Any) -> None:
            await manager.dispatch_batch([noop_job(i=-1)])
            watch.start()
            await manager.dispatch_batch([noop_job(i=i) for i in range(n)])
            watch.stop()

        self._run(body)

    def push_many(self, n: int) -> float:
        """Seconds ``RedisDriver.push_many`` takes for ``n`` records built beforehand."""
        noop_job = self.jobs[0]
        elapsed: list[float] = []

        async def body(manager: Any) -> None:
            records = [manager.make_record(noop_job(i=i)) for i in range(n)]
            started = time.perf_counter()
            await manager.driver.push_many(records)
            elapsed.append(time.perf_counter() - started)

        self._run(body)
        return elapsed[0]

    def send_finish(self) -> None:
        self._run(lambda manager: manager.dispatch(self.jobs[1]()))

    def send_probe(self, t0: float) -> None:
        # A probe loop reuses one manager: see ``probe_loop``.
        raise NotImplementedError

    def probe_loop(self, count: int) -> list[float]:
        results: list[float] = []
        probe_job = self.jobs[2]

        async def body(manager: Any) -> None:
            results.extend(await _probe_loop(count, lambda t0: manager.dispatch(probe_job(t0=t0))))

        self._run(body)
        return results

    def serve(self) -> None:
        from queuekit import QueueManager

        async def main() -> None:
            async with QueueManager(self.config) as manager:
                worker = await manager.start_worker(
                    queues=[QUEUE], concurrency=QK_CONCURRENCY, run_in_background=True
                )
                stop = asyncio.Event()
                asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
                await stop.wait()
                await worker.stop()

        asyncio.run(main())


class QueuekitUvloop(Queuekit):
    """queuekit on uvloop's event loop (``--uvloop``), beside the default asyncio loop."""

    name, module = "queuekit+uvloop", "uvloop"

    def __init__(self) -> None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        super().__init__()


class Huey(System):
    name, module = "huey", "huey"
    pending_key = ("list", f"huey.redis.{QUEUE}")

    def __init__(self) -> None:
        from huey import RedisHuey

        self.huey = RedisHuey(QUEUE, url=_url())
        self.noop = self.huey.task(name="noop")(noop)
        self.finish = self.huey.task(name="finish")(finish)
        self.probe = self.huey.task(name="probe")(probe)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        self.noop(-1)
        watch.start()
        for i in range(n):
            self.noop(i)
        watch.stop()

    def send_finish(self) -> None:
        self.finish()

    def send_probe(self, t0: float) -> None:
        self.probe(t0)

    def serve(self) -> None:
        self.huey.create_consumer(workers=4, worker_type="thread", periodic=False).run()


class RQ(System):
    name, module, has_batch = "rq", "rq", True
    pending_key = ("list", f"rq:queue:{QUEUE}")

    def __init__(self) -> None:
        import redis
        from rq import Queue

        self.conn = redis.Redis.from_url(_url())
        self.queue = Queue(QUEUE, connection=self.conn)

    # RQ refuses functions of __main__: jobs name this module by its import path.
    def dispatch(self, n: int, watch: Stopwatch) -> None:
        self.queue.enqueue(f"{MODULE}.noop", -1)
        watch.start()
        for i in range(n):
            self.queue.enqueue(f"{MODULE}.noop", i)
        watch.stop()

    def batch(self, n: int, watch: Stopwatch) -> None:
        from rq import Queue

        self.queue.enqueue_many([Queue.prepare_data(f"{MODULE}.noop", (-1,))])
        watch.start()
        self.queue.enqueue_many([Queue.prepare_data(f"{MODULE}.noop", (i,)) for i in range(n)])
        watch.stop()

    def send_finish(self) -> None:
        self.queue.enqueue(f"{MODULE}.finish")

    def send_probe(self, t0: float) -> None:
        self.queue.enqueue(f"{MODULE}.probe", t0)

    def serve(self) -> None:
        from rq import Worker

        Worker([self.queue], connection=self.conn).work(logging_level="WARNING")


class Arq(System):
    name, module = "arq", "arq"
    pending_key = ("zset", "arq:queue")

    def _settings(self) -> Any:
        from arq.connections import RedisSettings

        return RedisSettings.from_dsn(_url())

    def _run(self, body: Callable[[Any], Any]) -> Any:
        from arq import create_pool

        async def main() -> Any:
            pool = await create_pool(self._settings())
            try:
                return await body(pool)
            finally:
                await pool.aclose()

        return asyncio.run(main())

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        async def body(pool: Any) -> None:
            await pool.enqueue_job("noop", -1)
            watch.start()
            for i in range(n):
                await pool.enqueue_job("noop", i)
            watch.stop()

        self._run(body)

    def send_finish(self) -> None:
        self._run(lambda pool: pool.enqueue_job("finish"))

    def probe_loop(self, count: int) -> list[float]:
        return self._run(lambda pool: _probe_loop(count, lambda t0: pool.enqueue_job("probe", t0)))

    def serve(self) -> None:
        from arq.worker import func, run_worker

        class Settings:
            functions = [
                func(_anoop, name="noop"),
                func(_afinish, name="finish"),
                func(_aprobe, name="probe"),
            ]
            redis_settings = self._settings()

        run_worker(Settings)  # type: ignore[arg-type]


class Dramatiq(System):
    name, module = "dramatiq", "dramatiq"
    pending_key = ("list", f"dramatiq:{QUEUE}")

    def __init__(self) -> None:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker

        self.broker = RedisBroker(url=_url())
        dramatiq.set_broker(self.broker)
        self.noop = dramatiq.actor(noop, actor_name="noop", queue_name=QUEUE)
        self.finish = dramatiq.actor(finish, actor_name="finish", queue_name=QUEUE)
        self.probe = dramatiq.actor(probe, actor_name="probe", queue_name=QUEUE)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        self.noop.send(-1)
        watch.start()
        for i in range(n):
            self.noop.send(i)
        watch.stop()

    def send_finish(self) -> None:
        self.finish.send()

    def send_probe(self, t0: float) -> None:
        self.probe.send(t0)

    def serve(self) -> None:
        import dramatiq

        worker = dramatiq.Worker(self.broker, worker_threads=16)
        worker.start()
        _wait_for_sigterm()
        worker.stop()


class Celery(System):
    name, module = "celery", "celery"
    pending_key = ("list", QUEUE)

    def __init__(self) -> None:
        from celery import Celery as App

        self.app = App("bench", broker=_url())
        self.app.conf.update(
            task_ignore_result=True, task_default_queue=QUEUE, worker_hijack_root_logger=False
        )
        self.noop = self.app.task(name="noop")(noop)
        self.finish = self.app.task(name="finish")(finish)
        self.probe = self.app.task(name="probe")(probe)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        self.noop.delay(-1)
        watch.start()
        for i in range(n):
            self.noop.delay(i)
        watch.stop()

    def send_finish(self) -> None:
        self.finish.delay()

    def send_probe(self, t0: float) -> None:
        self.probe.delay(t0)

    def serve(self) -> None:
        self.app.worker_main(
            [
                "worker",
                "--pool=threads",
                "--concurrency=8",
                "--loglevel=WARNING",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ]
        )


class Saq(System):
    name, module = "saq", "saq"
    pending_key = ("list", f"saq:{QUEUE}:queued")

    def _queue(self) -> Any:
        from saq import Queue

        return Queue.from_url(_url(), name=QUEUE)

    def _run(self, body: Callable[[Any], Any]) -> Any:
        async def main() -> Any:
            queue = self._queue()
            await queue.connect()
            try:
                return await body(queue)
            finally:
                await queue.disconnect()

        return asyncio.run(main())

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        async def body(queue: Any) -> None:
            await queue.enqueue("noop", i=-1)
            watch.start()
            for i in range(n):
                await queue.enqueue("noop", i=i)
            watch.stop()

        self._run(body)

    def send_finish(self) -> None:
        self._run(lambda queue: queue.enqueue("finish"))

    def probe_loop(self, count: int) -> list[float]:
        return self._run(lambda queue: _probe_loop(count, lambda t0: queue.enqueue("probe", t0=t0)))

    def serve(self) -> None:
        from saq import Worker

        async def anoop(ctx: Any, **kwargs: Any) -> None:
            noop()

        async def afinish(ctx: Any, **kwargs: Any) -> None:
            finish()

        async def aprobe(ctx: Any, *, t0: float) -> None:
            probe(t0)

        anoop.__qualname__ = anoop.__name__ = "noop"
        afinish.__qualname__ = afinish.__name__ = "finish"
        aprobe.__qualname__ = aprobe.__name__ = "probe"

        async def main() -> None:
            worker = Worker(self._queue(), functions=[anoop, afinish, aprobe])
            task = asyncio.ensure_future(worker.start())
            stop = asyncio.Event()
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
            await stop.wait()
            await worker.stop()
            task.cancel()

        asyncio.run(main())


class BareSync(System):
    """Not a job queue: redis-py's blocking client awaiting one LPUSH per job.

    The floor of a synchronous library's one-by-one dispatch (Huey's enqueue is one LPUSH).
    """

    name, module = "redis-py-sync", "redis"
    metrics = ("dispatch",)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        client = _redis(_url())
        client.lpush(f"bare:{QUEUE}", -1)
        watch.start()
        for i in range(n):
            client.lpush(f"bare:{QUEUE}", i)
        watch.stop()


class BareAsync(System):
    """Not a job queue: redis-py's asyncio client awaiting one EVALSHA (of an LPUSH) per job.

    The floor of one-by-one dispatch for an asyncio library whose every dispatch is one
    acknowledged script run, as queuekit's is.
    """

    name, module = "redis-py-async", "redis"
    metrics = ("dispatch",)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        import redis.asyncio as aredis

        async def main() -> None:
            client = aredis.Redis.from_url(_url())
            script = client.register_script("return redis.call('LPUSH', KEYS[1], ARGV[1])")
            key = f"bare:{QUEUE}"
            await script(keys=[key], args=[-1])  # loads it: the loop runs by SHA
            watch.start()
            for i in range(n):
                await client.evalsha(script.sha, 1, key, i)
            watch.stop()
            await client.aclose()

        asyncio.run(main())


class BareAsyncUvloop(BareAsync):
    """``BareAsync`` on uvloop's event loop (``--uvloop``)."""

    name, module = "redis-py-async+uvloop", "uvloop"

    def __init__(self) -> None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


class BareResp(System):
    """Not a job queue: one EVALSHA per job over a bare ``asyncio.Protocol``, hiredis parsing.

    The floor of one-by-one dispatch for any asyncio client: no pool, no timeouts, nothing but
    the event loop's round trip (queuekit's own connections add their bookkeeping to this).
    """

    name, module = "asyncio-hiredis", "hiredis"
    metrics = ("dispatch",)

    def dispatch(self, n: int, watch: Stopwatch) -> None:
        import collections

        import hiredis

        class Resp(asyncio.Protocol):
            def __init__(self) -> None:
                self.reader = hiredis.Reader()
                self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()

            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def data_received(self, data: bytes) -> None:
                self.reader.feed(data)
                while (reply := self.reader.gets()) is not False:
                    self.waiting.popleft().set_result(reply)

            def call(self, *args: Any) -> asyncio.Future[Any]:
                future = asyncio.get_running_loop().create_future()
                self.waiting.append(future)
                self.transport.write(hiredis.pack_command(args))
                return future

        async def main() -> None:
            address = _url().split("//", 1)[1].split("/", 1)[0]
            host, _, port = address.rpartition(":")
            loop = asyncio.get_running_loop()
            transport, conn = await loop.create_connection(Resp, host, int(port))
            key = f"bare:{QUEUE}"
            sha = await conn.call("SCRIPT", "LOAD", "return redis.call('LPUSH', KEYS[1], ARGV[1])")
            await conn.call("EVALSHA", sha, 1, key, -1)
            watch.start()
            for i in range(n):
                await conn.call("EVALSHA", sha, 1, key, i)
            watch.stop()
            transport.close()

        asyncio.run(main())


class BareRespUvloop(BareResp):
    """``BareResp`` on uvloop's event loop (``--uvloop``)."""

    name, module = "asyncio-hiredis+uvloop", "uvloop"

    def __init__(self) -> None:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


SYSTEMS: dict[str, type[System]] = {
    s.name: s
    for s in (
        Queuekit,
        QueuekitUvloop,
        BareSync,
        BareAsync,
        BareAsyncUvloop,
        BareResp,
        BareRespUvloop,
        Huey,
        RQ,
        Arq,
        Dramatiq,
        Celery,
        Saq,
    )
}
OURS = ("queuekit", "queuekit+uvloop")
#: Rows that are not job queues: the client floors one-by-one dispatch is compared with.
BARE = (
    "redis-py-sync",
    "redis-py-async",
    "redis-py-async+uvloop",
    "asyncio-hiredis",
    "asyncio-hiredis+uvloop",
)
PEERS = [name for name in SYSTEMS if name not in OURS and name not in BARE]


def _wait_for_sigterm() -> None:
    """Block the main thread until SIGTERM."""
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: received.append(1))
    while not received:
        time.sleep(0.05)


async def _probe_loop(count: int, send: Callable[[float], Any]) -> list[float]:
    import redis.asyncio as aredis

    client = aredis.Redis.from_url(_url())
    results = []
    try:
        for _ in range(count):
            await send(time.time())
            reply = await client.blpop([LATENCY_KEY], timeout=10)
            results.append(float(reply[1]) if reply else float("inf"))
    finally:
        await client.aclose()
    return results


def _sync_probe_loop(system: System, count: int) -> list[float]:
    client = _redis(_url())
    results = []
    for _ in range(count):
        system.send_probe(time.time())
        reply = client.blpop([LATENCY_KEY], timeout=10)
        results.append(float(reply[1]) if reply else float("inf"))
    return results


def child(system_name: str, action: str, n: int) -> None:
    """Run one action of one system and print a JSON result line."""
    system = SYSTEMS[system_name]()
    started = time.perf_counter()
    result: dict[str, Any] = {}
    if action in ("dispatch", "batch"):
        watch = Stopwatch()
        getattr(system, action)(n, watch)
        result["seconds"] = watch.seconds
        print("RESULT " + json.dumps(result), flush=True)
        return
    if action == "push_many":
        result["seconds"] = system.push_many(n)  # type: ignore[attr-defined]
        print("RESULT " + json.dumps(result), flush=True)
        return
    if action == "fill":
        system.fill(n)
    elif action == "serve":
        system.serve()
        return
    elif action == "latency":
        loop = getattr(system, "probe_loop", None)
        result["samples"] = loop(n) if loop else _sync_probe_loop(system, n)
    result["seconds"] = time.perf_counter() - started
    print("RESULT " + json.dumps(result), flush=True)


# -- the harness -----------------------------------------------------------------------------


class Bench:
    """Starts the private server and runs child processes against it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.pythons = dict(item.split("=", 1) for item in args.python)
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server: subprocess.Popen[bytes] | None = None
        self.tmp = tempfile.mkdtemp(prefix="bench-redis-")

    def start_server(self) -> None:
        binary = self.args.redis_server or shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server not found; pass --redis-server PATH")
        self.server = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.tmp,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if self.redis().ping():
                    return
            time.sleep(0.05)
        raise SystemExit("private redis-server did not start")

    def stop_server(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def redis(self) -> Any:
        import redis

        return redis.Redis(port=self.port, socket_timeout=30)

    def python_for(self, name: str) -> str:
        return self.pythons.get(name, sys.executable)

    def available(self, name: str) -> bool:
        if name in self.pythons:
            return True
        return importlib.util.find_spec(SYSTEMS[name].module) is not None

    def _cmd(self, name: str, action: str, n: int) -> list[str]:
        return [self.python_for(name), str(HERE), "--child", name, action, str(n)]

    def _env(self) -> dict[str, str]:
        return {**os.environ, "BENCH_REDIS_URL": self.url, "PYTHONPATH": str(HERE.parent.parent)}

    def run_child(self, name: str, action: str, n: int, timeout: float) -> dict[str, Any]:
        """Run one child to completion; its RESULT line, or an error description."""
        try:
            proc = subprocess.run(
                self._cmd(name, action, n),
                env=self._env(),
                capture_output=True,
                timeout=timeout,
                text=True,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:g}s"}
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self._cmd(name, "serve", 0),
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: forked children are stopped too
        )

    @staticmethod
    def stop_worker(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)

    def flush(self) -> None:
        self.redis().flushall()

    # measurements

    def rate(self, name: str, action: str, n: int) -> float | str:
        self.flush()
        result = self.run_child(name, action, n, timeout=self.args.timeout)
        if "error" in result:
            return f"error: {result['error']}"
        return n / result["seconds"]

    def drain(self, name: str, n: int) -> float | str:
        self.flush()
        filled = self.run_child(name, "fill", n, timeout=self.args.timeout)
        if "error" in filled:
            return f"error: {filled['error']}"
        client = self.redis()
        started = time.perf_counter()
        worker = self.start_worker(name)
        try:
            deadline = started + self.args.timeout
            while not client.exists(DONE_KEY):
                if time.perf_counter() > deadline or worker.poll() is not None:
                    kind, key = SYSTEMS[name].pending_key
                    left = client.llen(key) if kind == "list" else client.zcard(key)
                    return f">{deadline - started:.0f}s ({(n - left) / (deadline - started):.0f}/s)"
                time.sleep(0.002)
            return n / (time.perf_counter() - started)
        finally:
            self.stop_worker(worker)

    def latency(self, name: str, count: int) -> tuple[float, float] | str:
        self.flush()
        worker = self.start_worker(name)
        try:
            # Wait until the worker runs jobs (start-up is not latency), then let it go idle.
            for _ in range(6):
                warm = self.run_child(name, "latency", 1, timeout=60)
                if "error" in warm:
                    return f"error: {warm['error']}"
                if warm["samples"][0] != float("inf"):
                    break
            time.sleep(1.0)
            self.redis().delete(LATENCY_KEY)
            result = self.run_child(name, "latency", count, timeout=self.args.timeout)
            if "error" in result:
                return f"error: {result['error']}"
            samples = sorted(result["samples"])
            p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
            return statistics.median(samples) * 1000, p99 * 1000
        finally:
            self.stop_worker(worker)

    def raw_redis(self, n: int) -> tuple[float, float]:
        client = self.redis()
        self.flush()
        started = time.perf_counter()
        for i in range(n):
            client.set("raw", i)
        single = n / (time.perf_counter() - started)
        pipe = client.pipeline(transaction=False)
        started = time.perf_counter()
        for i in range(n):
            pipe.set(f"raw:{i}", i)
        pipe.execute()
        return single, n / (time.perf_counter() - started)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fmt(value: Any, unit: str = "") -> str:
    if isinstance(value, float):
        return f"{value:,.0f}{unit}" if value >= 100 else f"{value:.2f}{unit}"
    return "—" if value is None else str(value)[:28]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=1,000 and 50 latency jobs")
    parser.add_argument("--n", type=int, default=None, help="jobs per measurement (10,000)")
    parser.add_argument("--latency-jobs", type=int, default=None)
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated peers")
    parser.add_argument(
        "--python", action="append", default=[], metavar="PEER=PATH", help="interpreter per peer"
    )
    parser.add_argument("--redis-server", default=None, help="redis-server binary")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound of one measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (best)")
    parser.add_argument("--uvloop", action="store_true", help="also run queuekit on uvloop")
    parser.add_argument(
        "--metrics",
        default="dispatch,batch,drain,latency",
        help="comma-separated measurements to take (the others print as —)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("SYSTEM", "ACTION", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        name, action, n = args.child
        child(name, action, int(n))
        return
    n = args.n or (1_000 if args.quick else 10_000)
    latency_jobs = args.latency_jobs or (50 if args.quick else 200)
    metrics = set(args.metrics.split(","))
    bench = Bench(args)
    ours = ["queuekit", "queuekit+uvloop"] if args.uvloop else ["queuekit"]
    bare = [*BARE] if args.uvloop else [b for b in BARE if "uvloop" not in b]
    wanted = [*ours, *[p for p in args.peers.split(",") if p], *bare]
    names = [w for w in wanted if w in SYSTEMS and bench.available(w)]
    skipped = [w for w in wanted if w not in names]
    bench.start_server()
    rows: dict[str, dict[str, Any]] = {name: {} for name in names}
    try:
        single, piped = bench.raw_redis(n)
        driver_only: Any = None
        # Round-robin rounds, best of each: load from other processes comes and goes, and
        # interleaving gives every system the same chances.
        for metric in ("dispatch", "batch", "drain", "latency"):
            for round_no in range(args.rounds):
                for name in names:
                    row = rows[name]
                    if metric not in metrics or metric not in SYSTEMS[name].metrics:
                        row[metric] = None
                        continue
                    if metric == "batch" and not SYSTEMS[name].has_batch:
                        row[metric] = None
                        continue
                    if round_no and not _worth_repeating(row.get(metric)):
                        continue
                    print(
                        f"... {metric} {name} (round {round_no + 1})", file=sys.stderr, flush=True
                    )
                    if metric == "latency":
                        value: Any = bench.latency(name, latency_jobs)
                    elif metric == "drain":
                        value = bench.drain(name, n)
                    else:
                        value = bench.rate(name, metric, n)
                    row[metric] = _better(row.get(metric), value)
                if metric == "batch" and metric in metrics and "queuekit" in names:
                    # The driver's share of a batch, in the same rounds as the batches.
                    driver_only = _better(driver_only, bench.rate("queuekit", "push_many", n))
    finally:
        bench.stop_server()
    _report(rows, n, latency_jobs, single, piped, skipped, args.rounds)

    if driver_only is not None:
        print(
            f"  (queuekit batch, driver part only — RedisDriver.push_many of pre-built records: "
            f"{_fmt(driver_only)} jobs/s)"
        )


def _worth_repeating(value: Any) -> bool:
    """Errors, timeouts and latencies above 100 ms are not measured again."""
    if isinstance(value, tuple):
        return value[0] < 100
    return isinstance(value, float)


def _better(old: Any, new: Any) -> Any:
    """The better of two measurements: a number beats an error; the higher rate, lower p50."""
    if not isinstance(new, float | tuple):
        return old if old is not None else new
    if not isinstance(old, float | tuple):
        return new
    if isinstance(new, tuple):
        return new if new[0] < old[0] else old
    return max(old, new)


def _report(
    rows: dict[str, dict[str, Any]],
    n: int,
    latency_jobs: int,
    single: float,
    piped: float,
    skipped: list[str],
    rounds: int,
) -> None:
    print(f"\nRedis job queues, N = {n:,} no-op jobs, one worker process, same redis-server")
    print(f"best of {rounds} interleaved rounds; queuekit worker concurrency {QK_CONCURRENCY}")
    print(f"raw Redis (redis-py, sync): {single:,.0f} SET/s one by one, {piped:,.0f}/s pipelined")
    header = f"{'system':<22} {'dispatch/s':>12} {'batch/s':>12} {'drain/s':>14} "
    header += f"{'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        lat = row["latency"]
        p50, p99 = lat if isinstance(lat, tuple) else (lat, None)
        print(
            f"{name:<22} {_fmt(row['dispatch']):>12} {_fmt(row['batch']):>12} "
            f"{_fmt(row['drain']):>14} {_fmt(p50):>8} {_fmt(p99):>8}"
        )
    if skipped:
        print(f"(not installed, skipped: {', '.join(skipped)})")
    peers = {k: v for k, v in rows.items() if k not in OURS and k not in BARE}
    for name in OURS:
        if name in rows and peers:
            _ratios(name, rows[name], peers, latency_jobs)
        suffix = "+uvloop" if "uvloop" in name else ""
        for floor in (f"redis-py-async{suffix}", f"asyncio-hiredis{suffix}"):
            ours, bare = rows.get(name, {}).get("dispatch"), rows.get(floor, {}).get("dispatch")
            if isinstance(ours, float) and isinstance(bare, float):
                print(f"  dispatch  {ours / bare:5.2f}x {floor} (one EVALSHA awaited per job)")


def _ratios(
    name: str, qk: dict[str, Any], peers: dict[str, dict[str, Any]], latency_jobs: int
) -> None:
    """Print ``name``'s figures as ratios to the fastest peer's, against the targets."""
    print(f"\n{name} vs the fastest peer (latency over {latency_jobs} jobs):")
    for column, target in (("dispatch", 2.0), ("drain", 2.0)):
        numbers = {k: v[column] for k, v in peers.items() if isinstance(v[column], float)}
        if numbers and isinstance(qk[column], float):
            best = max(numbers, key=numbers.__getitem__)
            ratio = qk[column] / numbers[best]
            verdict = "met" if ratio >= target else "NOT met"
            print(f"  {column:<9} {ratio:5.2f}x {best:<9} (target >= {target:g}x: {verdict})")
    if isinstance(qk["batch"], float):
        verdict = "met" if qk["batch"] >= 100_000 else "NOT met"
        print(f"  batch     {qk['batch']:,.0f} jobs/s (target >= 100,000/s: {verdict})")
    p50s = {k: v["latency"][0] for k, v in peers.items() if isinstance(v["latency"], tuple)}
    if p50s and isinstance(qk["latency"], tuple):
        best = min(p50s, key=p50s.__getitem__)
        ratio = p50s[best] / qk["latency"][0]
        verdict = "met" if qk["latency"][0] <= p50s[best] else "NOT met"
        print(f"  p50       {ratio:5.2f}x {best:<9} (target: <= best peer's p50: {verdict})")


if __name__ == "__main__":
    main()
