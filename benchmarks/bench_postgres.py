"""Benchmark of the database driver on PostgreSQL, beside pgbench, pgqueuer and procrastinate.

In one run, on the server at ``QUEUEKIT_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``):

- pgbench's single-client INSERT rate: ``pgbench -c 1 -M prepared`` inserting one ~300-byte row
  per transaction into a scratch table with a bigserial primary key (measured before and after
  queuekit's one-by-one dispatch, the mean is the reference). Without a ``pgbench`` binary, a
  sequential INSERT-per-transaction loop with psycopg stands in, and the table says so.
- pgbench sending queuekit's own one-by-one INSERT (its columns) into tables of queuekit's shape
  and indexes, in the same places: what the server gives that very statement
  from a C client. The gap between it and queuekit's dispatch is the Python client's share, the
  gap between it and the reference is the cost of the statement and the table's indexes.
- queuekit: dispatch N no-op jobs one by one (``QueueManager.dispatch``) and in batches of 1,000
  (``dispatch_batch``); drain each lot with one worker process at concurrency 1 and 10. Also,
  with no peer beside it, N jobs dispatched one by one by 8 concurrent tasks (drained unmeasured):
  what concurrent requests of a web application get.
- pgqueuer (asyncpg driver): ``enqueue`` one by one and in batches of 1,000; drain with its
  consumer at ``batch_size`` 1 and at its default 10 (``mode=drain``).
- procrastinate (psycopg): ``defer_async`` one by one, ``batch_defer_async`` of 1,000; drain with
  ``run_worker_async(wait=False)`` at concurrency 1 and 10.

Dispatch times start once the job objects exist (queuekit's ``Noop()`` instances, pgqueuer's and
procrastinate's arguments are built inside the timing, being plain lists) and end when the last
call returned; the client process's CPU time per job is shown beside them where measured. Drain
time is measured inside the worker process, from the start of its run to its return, so
process start-up is not counted. Every system gets tables (or a schema) of its own, dropped at the
end. All of it runs ``--rounds`` times in turn (default 3) and the table keeps the best figure of
each row, with the range over the rounds: load from other processes comes and goes, and a round
disturbed for one system tells nothing about it. Each target ratio is shown for the best figures
and for every round.

    python benchmarks/bench_postgres.py                        # N = 10,000, 3 rounds
    python benchmarks/bench_postgres.py --quick --rounds 1     # N = 1,000, one pass
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg

from queuekit import QueueManager
from queuekit.drivers.database.postgres_sql import PostgresStatements
from queuekit.drivers.database.schema import JOB_COLUMNS
from queuekit.job import QueueJob

URL = os.environ.get("QUEUEKIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BATCH = 1_000
#: Before its dispatch is timed, each system stores and deletes one job (one batch for a batch
#: figure) in this queue: a fresh connection's one-time work (asyncpg's type introspection,
#: statement preparation, psycopg's first COPY) is not what the figure is about.
WARM_UP = "bench-warm-up"
#: Concurrent dispatching coroutines for queuekit's "dispatch 1 by 1, 8 tasks" row (no peer).
TASKS = 8
ROW_TEXT = "x" * 300  # about the size of a queuekit job row


class Noop(QueueJob):
    """The job queuekit dispatches: it does nothing."""

    job_name: ClassVar[str] = "bench.postgres.noop"

    async def handle(self) -> None:
        return None


@dataclass
class Row:
    """One measured line of the table."""

    system: str
    operation: str
    jobs: int
    seconds: float
    #: CPU seconds the client process spent meanwhile, where measured.
    cpu: float | None = None

    @property
    def rate(self) -> float:
        """Jobs (or transactions) per second."""
        return self.jobs / self.seconds if self.seconds > 0 else float("inf")

    @property
    def cpu_per_job(self) -> str:
        """The client's CPU time per job, in microseconds, or blank where not measured."""
        return "" if self.cpu is None else f"{self.cpu / self.jobs * 1e6:.1f} us"


#: The operation of the row every dispatch target is compared with: pgbench's (or, without a
#: pgbench binary, a psycopg loop's) single-client INSERT, mean of the runs around queuekit's.
REFERENCE = "INSERT, 1 client (mean)"
#: pgbench sending queuekit's own INSERT: the server's part of one-by-one dispatch.
OWN_INSERT = ("pgbench", "queuekit's INSERT, 1 client (mean)")


def _run_json(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script as a sub-command; return the JSON it printed last."""
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise RuntimeError(f"{args[0]} failed: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _sql(statement: str) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


# -- the single-client INSERT reference ----------------------------------------------------------


def _pgbench(script: str, seconds: float, *extra: str) -> float | None:
    """Transactions per second of ``pgbench -c 1 -M prepared`` running ``script`` (None: no
    pgbench binary)."""
    pgbench = shutil.which("pgbench")
    if pgbench is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as file:
        file.write(script)
    try:
        command = [pgbench, "-n", "-c", "1", "-j", "1", "-M", "prepared", *extra]
        command += ["-T", str(max(1, round(seconds))), "-f", file.name, URL]
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    finally:
        os.unlink(file.name)
    return float(re.search(r"tps = ([0-9.]+)", out.stdout).group(1))  # type: ignore[union-attr]


def insert_reference(seconds: float) -> Row:
    """pgbench's single-client INSERT rate (or a psycopg loop where pgbench is missing)."""
    table = f"bench_insert_{uuid.uuid4().hex[:8]}"
    _sql(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)")
    try:
        tps = _pgbench(f"INSERT INTO {table} (payload) VALUES ('{ROW_TEXT}');\n", seconds)
        if tps is None:
            return _insert_loop(table, seconds)
        return Row("pgbench", "INSERT, 1 client", round(tps * seconds), seconds)
    finally:
        _sql(f"DROP TABLE {table}")


def queuekit_insert_reference(seconds: float) -> Row | None:
    """pgbench sending queuekit's own one-by-one INSERT, on tables of queuekit's own shape.

    The very statement ``dispatch`` waits for with a ``Noop`` (its 15 columns) into a table with
    the same indexes: what the server gives that statement from a C client, so the gap between it
    and queuekit's one-by-one dispatch is the Python client's share. (The NOTIFY that follows,
    shared by the commits of a few milliseconds, is left out.) The job id is a counter of
    pgbench's (``-D n=0``), rising as queuekit's time-ordered ids do. None without pgbench.
    """
    table = f"bench_qkref_{uuid.uuid4().hex[:8]}"
    sql = PostgresStatements.render(table, f"{table}_failed")
    with psycopg.connect(URL, autocommit=True) as conn:
        for statement in sql.create:
            conn.execute(statement)
    try:
        at = time.time()
        values = (
            "lpad(:n::text, 36, '0'), 'bench.postgres.noop', '{}', 'default', 0, 0, 3, NULL, "
            f"{at!r}, {at!r}, NULL, NULL, NULL, NULL, '{{}}'"
        )
        script = (
            f'\\set n :n + 1\nINSERT INTO "{table}" ({", ".join(JOB_COLUMNS)}) VALUES ({values});\n'
        )
        tps = _pgbench(script, seconds, "-D", "n=0")
        if tps is None:
            return None
        return Row("pgbench", "queuekit's INSERT, 1 client", round(tps * seconds), seconds)
    finally:
        for name in (table, f"{table}_failed"):
            _sql(f'DROP TABLE IF EXISTS "{name}"')


async def _async_insert_loop(table: str, seconds: float) -> Row:
    """The same INSERT from a sequential psycopg AsyncConnection loop: the Python client floor."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            await conn.execute(f"INSERT INTO {table} (payload) VALUES (%s)", [ROW_TEXT])  # type: ignore[arg-type]
            count += 1
        return Row("psycopg async", "INSERT, 1 client", count, time.perf_counter() - started)


def client_floor(seconds: float) -> Row:
    """A psycopg async INSERT loop on a scratch table (what any asyncio client pays per job)."""
    table = f"bench_insert_{uuid.uuid4().hex[:8]}"
    _sql(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, payload text NOT NULL)")
    try:
        return asyncio.run(_async_insert_loop(table, seconds))
    finally:
        _sql(f"DROP TABLE {table}")


def _insert_loop(table: str, seconds: float) -> Row:
    with psycopg.connect(URL, autocommit=True) as conn:
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            conn.execute(f"INSERT INTO {table} (payload) VALUES (%s)", [ROW_TEXT])  # type: ignore[arg-type]
            count += 1
        return Row("psycopg loop", "INSERT, 1 client", count, time.perf_counter() - started)


# -- queuekit ------------------------------------------------------------------------------------


def _queuekit_config(table: str) -> dict[str, Any]:
    options = {"url": URL, "table": table, "failed_table": f"{table}_failed"}
    return {"queue": {"driver": "database", "database": options}}


async def _queuekit_dispatch(
    config: dict[str, Any], n: int, batch: bool, tasks: int = 1
) -> tuple[float, float]:
    """Seconds and client CPU seconds to dispatch ``n`` jobs (their objects made beforehand).

    One by one, ``tasks`` coroutines share the jobs, each dispatching its own one after another
    (as concurrent requests of a web application do).
    """
    async with QueueManager(config) as manager:
        # Warmed up as the peers are (see WARM_UP), then left with only the measured jobs.
        if batch:
            await manager.dispatch_batch([Noop() for _ in range(BATCH)], queue=WARM_UP)
        else:
            await manager.dispatch(Noop(), queue=WARM_UP)
        await manager.purge(WARM_UP)
        jobs = [Noop() for _ in range(n)]
        started, cpu = time.perf_counter(), time.process_time()
        if batch:
            for start in range(0, n, BATCH):
                await manager.dispatch_batch(jobs[start : start + BATCH])
        else:

            async def dispatch_each(share: list[Noop]) -> None:
                for job in share:
                    await manager.dispatch(job)

            await asyncio.gather(*(dispatch_each(jobs[i::tasks]) for i in range(tasks)))
        return time.perf_counter() - started, time.process_time() - cpu


async def _queuekit_worker(config: dict[str, Any], n: int, concurrency: int) -> None:
    async with QueueManager(config) as manager:
        started = time.perf_counter()
        summary = await manager.start_worker(max_jobs=n, concurrency=concurrency)
        seconds = time.perf_counter() - started
        left = (await manager.stats(["default"]))["default"]
    print(json.dumps({"seconds": seconds, "completed": summary.completed, "left": left}))


def queuekit_rows(n: int, references: Callable[[], list[Row]]) -> tuple[list[Row], list[Row]]:
    """queuekit's rows, and the INSERT references measured before and after one-by-one dispatch."""
    table = f"bench_qk_{uuid.uuid4().hex[:8]}"
    config = _queuekit_config(table)

    def drain(concurrency: int) -> Row:
        result = _run_json(["--queuekit-worker", json.dumps(config), str(n), str(concurrency)])
        if result["completed"] != n:
            raise RuntimeError(f"queuekit worker completed {result['completed']} of {n}: {result}")
        return Row("queuekit", f"drain c={concurrency}", n, result["seconds"])

    try:
        measured = references()
        one = asyncio.run(_queuekit_dispatch(config, n, batch=False))
        measured += reversed(references())
        drain_one = drain(1)
        concurrent = asyncio.run(_queuekit_dispatch(config, n, batch=False, tasks=TASKS))
        drain(10)
        batch = asyncio.run(_queuekit_dispatch(config, n, batch=True))
        drain_ten = drain(10)
    finally:
        for name in (table, f"{table}_failed"):
            _sql(f'DROP TABLE IF EXISTS "{name}"')
        _sql(f"DELETE FROM queuekit_schema WHERE table_name IN ('{table}', '{table}_failed')")
    rows = [
        Row("queuekit", "dispatch 1 by 1", n, *one),
        Row("queuekit", f"dispatch 1 by 1, {TASKS} tasks", n, *concurrent),
        Row("queuekit", f"dispatch batch {BATCH}", n, *batch),
        drain_one,
        drain_ten,
    ]
    return rows, measured


# -- pgqueuer ------------------------------------------------------------------------------------


async def _pgqueuer_dispatch(n: int) -> dict[str, float]:
    import asyncpg
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(URL)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.install()
        await queries.enqueue(WARM_UP, None)
        await queries.clear_queue(WARM_UP)
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            await queries.enqueue("noop", None)
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}
    finally:
        await conn.close()


async def _pgqueuer_batch(n: int) -> dict[str, float]:
    import asyncpg
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(URL)
    try:
        queries = Queries.from_asyncpg_connection(conn)
        await queries.enqueue([WARM_UP] * BATCH, [None] * BATCH, [0] * BATCH)
        await queries.clear_queue(WARM_UP)
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, n, BATCH):
            size = min(BATCH, n - start)
            await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
        return {"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu}
    finally:
        await conn.close()


async def _pgqueuer_worker(n: int, batch_size: int) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(URL)
    pgq = PgQueuer.from_asyncpg_connection(conn)
    done = {"n": 0}

    @pgq.entrypoint("noop")
    async def noop(job: Any) -> None:
        done["n"] += 1

    started = time.perf_counter()
    await pgq.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    seconds = time.perf_counter() - started
    await conn.close()
    print(json.dumps({"seconds": seconds, "completed": done["n"]}))


def pgqueuer_rows(n: int) -> list[Row]:
    """pgqueuer in a schema of its own (``PGQUEUER_SCHEMA``)."""
    schema = f"bench_pgq_{uuid.uuid4().hex[:8]}"
    env = {"PGQUEUER_SCHEMA": schema}

    def drain(batch_size: int) -> Row:
        result = _run_json(["--pgqueuer-worker", str(n), str(batch_size)], env)
        if result["completed"] != n:
            raise RuntimeError(f"pgqueuer drained {result['completed']} of {n}")
        return Row("pgqueuer", f"drain batch_size={batch_size}", n, result["seconds"])

    try:
        one = _run_json(["--pgqueuer-dispatch", str(n)], env)
        drain_one = drain(1)
        batch = _run_json(["--pgqueuer-batch", str(n)], env)
        drain_ten = drain(10)
    finally:
        _sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return [
        Row("pgqueuer", "dispatch 1 by 1", n, one["seconds"], one["cpu"]),
        Row("pgqueuer", f"dispatch batch {BATCH}", n, batch["seconds"], batch["cpu"]),
        drain_one,
        drain_ten,
    ]


# -- procrastinate -------------------------------------------------------------------------------


def _procrastinate_app(schema: str) -> Any:
    import procrastinate

    connector = procrastinate.PsycopgConnector(
        conninfo=URL, kwargs={"options": f"-c search_path={schema}"}
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    return app, noop


async def _procrastinate_dispatch(schema: str, n: int, batch: bool, install: bool) -> None:
    app, noop = _procrastinate_app(schema)
    async with app.open_async():
        if install:
            await app.schema_manager.apply_schema_async()
        warm_up = noop.configure(queue=WARM_UP)
        if batch:
            await warm_up.batch_defer_async(*({} for _ in range(BATCH)))
        else:
            await warm_up.defer_async()
        await app.connector.execute_query_async(
            "DELETE FROM procrastinate_jobs WHERE queue_name = %(queue)s", queue=WARM_UP
        )
        started = time.perf_counter()
        if batch:
            for start in range(0, n, BATCH):
                await noop.batch_defer_async(*({} for _ in range(min(BATCH, n - start))))
        else:
            for _ in range(n):
                await noop.defer_async()
        print(json.dumps({"seconds": time.perf_counter() - started}))


async def _procrastinate_worker(schema: str, n: int, concurrency: int) -> None:
    app, _ = _procrastinate_app(schema)
    async with app.open_async():
        started = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        seconds = time.perf_counter() - started
        async with app.connector.pool.connection() as conn:  # type: ignore[attr-defined]
            cur = await conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            (succeeded,) = await cur.fetchone()
            await conn.execute("DELETE FROM procrastinate_jobs")
    print(json.dumps({"seconds": seconds, "completed": succeeded}))


def procrastinate_rows(n: int) -> list[Row]:
    """procrastinate in a schema of its own (``search_path``)."""
    schema = f"bench_proc_{uuid.uuid4().hex[:8]}"
    _sql(f"CREATE SCHEMA {schema}")

    def dispatch(batch: bool, install: bool) -> float:
        args = [schema, str(n), str(int(batch)), str(int(install))]
        return _run_json(["--procrastinate-dispatch", *args])["seconds"]

    def drain(concurrency: int) -> Row:
        result = _run_json(["--procrastinate-worker", schema, str(n), str(concurrency)])
        if result["completed"] != n:
            raise RuntimeError(f"procrastinate drained {result['completed']} of {n}")
        return Row("procrastinate", f"drain c={concurrency}", n, result["seconds"])

    try:
        one = dispatch(batch=False, install=True)
        drain_one = drain(1)
        batch = dispatch(batch=True, install=False)
        drain_ten = drain(10)
    finally:
        _sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    return [
        Row("procrastinate", "dispatch 1 by 1", n, one),
        Row("procrastinate", f"dispatch batch {BATCH}", n, batch),
        drain_one,
        drain_ten,
    ]


# -- the table -----------------------------------------------------------------------------------


def best_of(rounds: list[list[Row]]) -> tuple[list[Row], dict[tuple[str, str], list[float]]]:
    """The fastest measurement of each (system, operation) over the rounds, and every rate."""
    best: dict[tuple[str, str], Row] = {}
    rates: dict[tuple[str, str], list[float]] = {}
    for rows in rounds:
        for r in rows:
            key = (r.system, r.operation)
            rates.setdefault(key, []).append(r.rate)
            if key not in best or r.rate > best[key].rate:
                best[key] = r
    return list(best.values()), rates


def print_table(rounds: list[list[Row]]) -> None:
    """Print the best of every row over the rounds (and the range), then the target ratios."""
    rows, rates = best_of(rounds)
    header = (
        f"{'system':<14} {'operation':<34} {'jobs':>7} {'seconds':>8} {'per second':>11}"
        f"  {'range over rounds':>17}  {'client CPU/job':>14}"
    )
    print(f"best of {len(rounds)} interleaved round(s); figures depend on the machine's load")
    print(header)
    print("-" * len(header))
    for r in rows:
        seen = rates[(r.system, r.operation)]
        spread = f"{min(seen):.0f}-{max(seen):.0f}" if len(seen) > 1 else ""
        print(
            f"{r.system:<14} {r.operation:<34} {r.jobs:>7} {r.seconds:>8.3f} {r.rate:>11.0f}"
            f"  {spread:>17}  {r.cpu_per_job:>14}"
        )

    def rate(round_rows: list[Row], system: str, operation: str) -> float | None:
        return next(
            (r.rate for r in round_rows if (r.system, r.operation) == (system, operation)), None
        )

    # pgbench's, or the psycopg loop standing in for it where there is no pgbench binary.
    reference = next(((r.system, r.operation) for r in rows if r.operation == REFERENCE), None)
    if reference is None:
        return
    print()
    print(
        f"reference: {' '.join(reference)}, runs before and after queuekit's one-by-one "
        "dispatch in the same round"
    )
    targets = [
        ("dispatch 1 by 1 vs single-client INSERT", ("queuekit", "dispatch 1 by 1"), None, 0.9),
        ("  pgbench, queuekit's INSERT vs the same", OWN_INSERT, None, None),
        (
            "  psycopg async INSERT loop vs the same",
            ("psycopg async", "INSERT, 1 client"),
            None,
            None,
        ),
        (
            "dispatch 1 by 1 vs pgbench, queuekit's INSERT",
            ("queuekit", "dispatch 1 by 1"),
            OWN_INSERT,
            None,
        ),
        (
            f"dispatch batch {BATCH} vs pgqueuer",
            ("queuekit", f"dispatch batch {BATCH}"),
            ("pgqueuer", f"dispatch batch {BATCH}"),
            2.0,
        ),
        (
            "drain c=10 vs pgqueuer (batch_size=10)",
            ("queuekit", "drain c=10"),
            ("pgqueuer", "drain batch_size=10"),
            2.0,
        ),
        (
            "drain c=1 vs pgqueuer (batch_size=1)",
            ("queuekit", "drain c=1"),
            ("pgqueuer", "drain batch_size=1"),
            None,
        ),
    ]
    print(f"{'':<46} {'best':>7}  per round")
    for label, ours, theirs, target in targets:
        theirs = theirs or reference
        best_ours, best_theirs = rate(rows, *ours), rate(rows, *theirs)
        if best_ours is None or not best_theirs:
            print(f"{label:<46} n/a")
            continue
        ratio = best_ours / best_theirs
        per_round = []
        for round_rows in rounds:
            a, b = rate(round_rows, *ours), rate(round_rows, *theirs)
            per_round.append(f"{a / b:.2f}" if a is not None and b else "n/a")
        verdict = (
            ""
            if target is None
            else f"  target >= {target:g}x: " + ("met" if ratio >= target else "NOT met")
        )
        print(f"{label:<46} {ratio:6.2f}x  {' '.join(per_round)}{verdict}")


def _references(seconds: float) -> list[Row]:
    """The single-client INSERT reference, then pgbench sending queuekit's own INSERT."""
    rows = [insert_reference(seconds)]
    own = queuekit_insert_reference(seconds)
    return rows if own is None else [*rows, own]


def _means(rows: list[Row]) -> list[Row]:
    """One row per (system, operation): the jobs and seconds of its runs added up."""
    means: dict[tuple[str, str], Row] = {}
    for r in rows:
        mean = means.setdefault(
            (r.system, r.operation), Row(r.system, f"{r.operation} (mean)", 0, 0)
        )
        mean.jobs += r.jobs
        mean.seconds += r.seconds
    return list(means.values())


def run_round(n: int, seconds: float, peers: list[Callable[[int], list[Row]]]) -> list[Row]:
    """One measurement of every system: queuekit between pgbench runs, then the peers."""
    rows, references = queuekit_rows(n, lambda: _references(seconds))
    rows = [*_means(references), client_floor(seconds / 2), *rows]
    for peer in peers:
        try:
            rows += peer(n)
        except Exception as e:  # a missing peer must not hide the other figures
            print(f"{peer.__name__}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    return rows


def main() -> None:
    """Parse arguments and run every system (or serve as one of the sub-commands)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000 instead of 10,000")
    parser.add_argument("-n", type=int, default=None, help="jobs per measurement")
    parser.add_argument("--insert-seconds", type=float, default=None, help="pgbench run length")
    parser.add_argument("--skip-peers", action="store_true", help="queuekit and pgbench only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of everything (best of)")
    parser.add_argument("--queuekit-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--pgqueuer-dispatch", help=argparse.SUPPRESS)
    parser.add_argument("--pgqueuer-batch", help=argparse.SUPPRESS)
    parser.add_argument("--pgqueuer-worker", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--procrastinate-dispatch", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--procrastinate-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.queuekit_worker:
        config, n, concurrency = args.queuekit_worker
        asyncio.run(_queuekit_worker(json.loads(config), int(n), int(concurrency)))
    elif args.pgqueuer_dispatch:
        print(json.dumps(asyncio.run(_pgqueuer_dispatch(int(args.pgqueuer_dispatch)))))
    elif args.pgqueuer_batch:
        print(json.dumps(asyncio.run(_pgqueuer_batch(int(args.pgqueuer_batch)))))
    elif args.pgqueuer_worker:
        asyncio.run(_pgqueuer_worker(*map(int, args.pgqueuer_worker)))
    elif args.procrastinate_dispatch:
        schema, n, batch, install = args.procrastinate_dispatch
        asyncio.run(_procrastinate_dispatch(schema, int(n), batch == "1", install == "1"))
    elif args.procrastinate_worker:
        schema, n, concurrency = args.procrastinate_worker
        asyncio.run(_procrastinate_worker(schema, int(n), int(concurrency)))
    else:
        n = args.n or (1_000 if args.quick else 10_000)
        seconds = args.insert_seconds or (3.0 if args.quick else 10.0)
        peers = [] if args.skip_peers else [pgqueuer_rows, procrastinate_rows]
        # Round after round, best of each: load from other processes comes and goes.
        print_table([run_round(n, seconds, peers) for _ in range(args.rounds)])


if __name__ == "__main__":
    main()
