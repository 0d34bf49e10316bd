"""The PostgreSQL dialect of the database driver, against the real server.

The contract suite, restarts, a corrupt row, transactional dispatch (both outcomes), LISTEN/NOTIFY
wake-ups, a dropped connection, and many worker processes. Every test uses tables of its own,
dropped afterwards, since several test runs share the server.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from queuekit.clock import now
from queuekit.errors import DriverError, DuplicateJobError, PayloadError
from queuekit.manager import QueueManager
from queuekit.testing import ContractJob, DriverContract, make_record
from tests.services import POSTGRES_URL, require_service

psycopg = pytest.importorskip("psycopg")

from queuekit.drivers.database.postgres import PostgresDriver  # noqa: E402

LEASE = 30.0


@contextmanager
def postgres_tables() -> Iterator[dict[str, str]]:
    """Fresh table names; the tables and their schema rows are dropped on leaving."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as e:
        require_service("PostgreSQL", e)
    name = f"qk_{uuid.uuid4().hex[:12]}"
    names = {"table": name, "failed_table": f"{name}_failed"}
    try:
        yield names
    finally:
        for table in names.values():
            admin.execute(f'DROP TABLE IF EXISTS "{table}"')  # type: ignore[arg-type]
        if admin.execute("SELECT to_regclass('queuekit_schema')").fetchone()[0] is not None:  # type: ignore[index]
            admin.execute(
                "DELETE FROM queuekit_schema WHERE table_name = ANY(%s)", [list(names.values())]
            )
        admin.close()


@pytest.fixture
def tables() -> Iterator[dict[str, str]]:
    """Fresh table names for one test, dropped after it."""
    with postgres_tables() as names:
        yield names


def pg_options(tables: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Options of the test's tables (a short poll keeps cross-process tests quick)."""
    return {"url": POSTGRES_URL, "poll_interval": 0.05, **tables, **extra}


async def open_pg(tables: dict[str, str], **extra: Any) -> PostgresDriver:
    """A connected driver on the test's tables."""
    driver = PostgresDriver(pg_options(tables, **extra))
    await driver.connect()
    return driver


def manager_config(tables: dict[str, str], **extra: Any) -> dict[str, Any]:
    """A QueueManager config on the test's tables."""
    return {"queue": {"driver": "database", "database": pg_options(tables, **extra)}}


class TestPostgresDriver(DriverContract):
    @pytest.fixture
    async def driver(self, tables: dict[str, str]) -> AsyncIterator[PostgresDriver]:
        d = await open_pg(tables)
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, tables: dict[str, str]) -> Callable[[], Awaitable[PostgresDriver]]:
        async def _open() -> PostgresDriver:
            return await open_pg(tables)

        return _open


# -- schema and restarts ----------------------------------------------------------------------


async def test_concurrent_connects_create_the_schema_once(tables: dict[str, str]) -> None:
    drivers = await asyncio.gather(*(open_pg(tables) for _ in range(4)))
    try:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            cur = await conn.execute(
                "SELECT table_name, version FROM queuekit_schema WHERE table_name = ANY(%s) "
                "ORDER BY table_name",
                [list(tables.values())],
            )
            rows = await cur.fetchall()
        assert rows == [(tables["table"], 1), (tables["failed_table"], 1)]
    finally:
        for d in drivers:
            await d.close()


async def test_a_newer_schema_version_is_refused(tables: dict[str, str]) -> None:
    await (await open_pg(tables)).close()
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(
            "UPDATE queuekit_schema SET version = 99 WHERE table_name = %s", [tables["table"]]
        )
    with pytest.raises(DriverError, match=rf"{tables['table']}.*schema version 99"):
        await open_pg(tables)


async def test_jobs_and_failures_survive_a_restart(tables: dict[str, str]) -> None:
    async with QueueManager(manager_config(tables)) as manager:
        ids = await manager.dispatch_batch([ContractJob(n=i) for i in range(3)])
        one = await manager.dispatch(ContractJob(n=9), delay=60)
    first = await open_pg(tables)
    got = await first.reserve(None, lease=LEASE)
    assert got is not None
    assert await first.fail(got, "kept")
    await first.close()

    again = await open_pg(tables)
    try:
        stats = (await again.stats(["default"]))["default"]
        assert stats == {"pending": 2, "delayed": 1, "reserved": 0, "failed": 1}
        assert [r.id for r in await again.failed()] == [ids[0]]
        drained = []
        while (record := await again.reserve(None, lease=LEASE)) is not None:
            drained.append(record.id)
            assert await again.complete(record)
        assert drained == ids[1:]
        assert one not in drained
    finally:
        await again.close()


# -- bad input ---------------------------------------------------------------------------------

# A job row whose payload is not JSON: test_database.py, for every dialect.


async def test_an_unreadable_failed_row_is_logged_and_hides_nothing(
    tables: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    driver = await open_pg(tables)
    try:
        await driver.push(make_record(1))
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and await driver.fail(got, "boom")
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(
                f'INSERT INTO "{tables["failed_table"]}" (id, job_name, payload, queue, '  # type: ignore[arg-type]
                "priority, attempts, max_retries, created_at, available_at, meta, failed_at) "
                "VALUES ('f-1', 'x', '{}', 'default', 0, 1, 3, 0, 0, '[oops', 0)"
            )
        with caplog.at_level("ERROR", logger="queuekit.database.postgres"):
            failed = await driver.failed()
        assert [r.id for r in failed] == [got.id]
        assert tables["failed_table"] in caplog.text and "f-1" in caplog.text
        assert "meta" in caplog.text
        assert await driver.forget_failed(["f-1"]) == 1
    finally:
        await driver.close()


async def _kill_sessions(application_name: str) -> int:
    """Terminate every server session named ``application_name``; returns how many."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [application_name],
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def _wait_until_blocked(application_name: str) -> None:
    """Return once a session named ``application_name`` waits for a lock (bounded)."""
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        for _ in range(200):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND wait_event_type = 'Lock'",
                [application_name],
            )
            row = await cur.fetchone()
            if row and row[0]:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"no session {application_name!r} ever waited for the lock")


async def test_a_dropped_connection_is_a_clear_error_and_loses_nothing(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables, pool_size=1)
    name = f"queuekit:{tables['table']}"
    try:
        kept = make_record(1)
        assert await driver.push(kept)
        # Hold the statement on the server (a lock), then kill every session of the driver.
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as locker:
            await locker.execute(f'LOCK TABLE "{tables["table"]}" IN ACCESS EXCLUSIVE MODE')  # type: ignore[arg-type]
            pushing = asyncio.create_task(driver.push(make_record(2)))
            await _wait_until_blocked(name)
            assert await _kill_sessions(name) >= 1
            with pytest.raises(DriverError, match=tables["table"]):
                await asyncio.wait_for(pushing, 30)
            await locker.rollback()
        # The next statements open new connections by themselves; the acknowledged job is there.
        assert await driver.push(make_record(3))
        got = None
        for _ in range(50):
            try:
                got = await driver.reserve(None, lease=LEASE)
                break
            except DriverError:
                await asyncio.sleep(0.1)  # the pool finds its connection dead on first use
        assert got is not None and got.id == kept.id
    finally:
        await driver.close()


async def test_sessions_killed_while_idle_are_replaced_without_an_error(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables)
    try:
        assert await driver.push(make_record(1))
        assert await _kill_sessions(f"queuekit:{tables['table']}") >= 1
        # The driver notices the closed socket on its own; the next pushes reconnect.
        for n in range(2, 5):
            await asyncio.sleep(0.2)
            assert await driver.push(make_record(n))
        got = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.payload["n"] for r in got] == [1, 2, 3, 4]
    finally:
        await driver.close()


async def test_a_reservation_cancelled_in_flight_hands_its_job_back(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables)
    other = await open_pg(tables)
    try:
        record = make_record(1)
        assert await driver.push(record)
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as locker:
            await locker.execute(f'LOCK TABLE "{tables["table"]}" IN ACCESS EXCLUSIVE MODE')  # type: ignore[arg-type]
            reserving = asyncio.create_task(driver.reserve(None, lease=600))
            await _wait_until_blocked(f"queuekit:{tables['table']}")
            reserving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reserving
            await locker.rollback()  # the reservation runs now, for a caller who has gone
        # Handed back with the attempt uncounted, long before its 600 s lease would end.
        got = None
        for _ in range(100):
            got = await other.reserve(None, lease=LEASE)
            if got is not None:
                break
            await asyncio.sleep(0.05)
        assert got is not None and got.id == record.id
        assert got.attempts == 1
    finally:
        await driver.close()
        await other.close()


async def test_concurrent_statements_share_the_pipelined_connections(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables, pool_size=3)
    try:
        records = [make_record(i) for i in range(300)]
        twice = records[7]
        # One statement fails (an id pushed twice) among hundreds in flight: only it is refused.
        results = await asyncio.gather(*(driver.push(r) for r in [*records, twice]))
        assert results.count(False) == 1 and results.count(True) == 300

        async def take(limit: int) -> list[str]:
            got = await driver.reserve_many(None, lease=LEASE, limit=limit)
            flags = await driver.complete_many(got)
            assert all(flags)
            return [r.id for r in got]

        taken: list[str] = []
        for _ in range(20):
            for ids in await asyncio.gather(*(take(n) for n in (1, 4, 7, 65))):
                taken += ids
        assert sorted(taken) == sorted(r.id for r in records), "every job exactly once"
    finally:
        await driver.close()


async def test_rows_read_back_exactly_through_every_write_path(tables: dict[str, str]) -> None:
    # Values that text encodings must escape, and every column type, through a pipelined push,
    # a small batch (one INSERT) and a large one (binary COPY).
    odd = 'tab\t, newline\n, quote ", backslash \\, accents é, emoji 🚀'
    t = now()

    def varied(n: int) -> Any:
        return make_record(
            n,
            payload={"n": n, "text": odd, "nested": {"list": [1, 2.5, None, True]}},
            priority=-3 if n % 2 else 7,
            max_retries=n % 4,
            timeout=None if n % 3 else 12.5,
            created_at=t + n / 1000,
            available_at=t - 1 + n / 1000,
            last_error=odd if n % 5 == 0 else None,
            meta={"trace": odd} if n % 2 else {},
        )

    driver = await open_pg(tables)
    try:
        one = varied(0)
        small = [varied(n) for n in range(1, 6)]
        large = [varied(n) for n in range(6, 60)]
        assert await driver.push(one)
        await driver.push_many(small)
        await driver.push_many(large)
        pushed = {r.id: r for r in [one, *small, *large]}
        got = await driver.reserve_many(None, lease=LEASE, limit=100)
        assert len(got) == len(pushed)
        for record in got:
            want = pushed[record.id].to_json()
            have = record.to_json()
            for volatile in ("attempts", "reserved_until", "lease_token"):
                want.pop(volatile)
                have.pop(volatile)
            assert have == want
    finally:
        await driver.close()


async def test_a_large_payload_travels_beside_small_statements(tables: dict[str, str]) -> None:
    driver = await open_pg(tables)
    try:
        big = make_record(0, payload={"n": 0, "blob": "x" * 4_000_000})
        small = [make_record(n) for n in range(1, 30)]
        assert all(await asyncio.gather(driver.push(big), *(driver.push(r) for r in small)))
        got = await driver.reserve_many(None, lease=LEASE, limit=50)
        by_id = {r.id: r for r in got}
        assert len(by_id) == 30
        assert by_id[big.id].payload == big.payload
    finally:
        await driver.close()


def test_pipelined_statements_take_the_row_in_column_order() -> None:
    from queuekit.drivers.database.postgres_sql import PostgresStatements
    from queuekit.drivers.database.schema import JOB_COLUMNS

    sql = PostgresStatements.render("jobs", "failed")
    hot = sql.hot
    assert hot.insert_job.params == JOB_COLUMNS
    # The driver's own writes announce their jobs after committing, never inside (a NOTIFY holds
    # a server-wide lock until its transaction's commit is on disk).
    for text in (hot.insert_job.text, hot.release.text, sql.push, sql.push_many, sql.copy_jobs):
        assert b"notify" not in text.lower()
    assert hot.reserve_across_queues(1).params == ("until", "token", "now")
    assert b"LIMIT 1\n" in hot.reserve_across_queues(1).text
    assert hot.reserve_across_queues(10_000) is hot.reserve_any
    assert hot.reserve_any.name == b"" and hot.reserve_queue.name == b""


async def test_a_batch_with_a_taken_unique_key_stores_nothing(tables: dict[str, str]) -> None:
    driver = await open_pg(tables)
    try:
        assert await driver.push(make_record(0, unique_key="k"))
        with pytest.raises(DuplicateJobError, match=tables["table"]):
            await driver.push_many([make_record(1), make_record(2, unique_key="k")])
        assert (await driver.stats(["default"]))["default"]["pending"] == 1
    finally:
        await driver.close()


@pytest.mark.parametrize("size", [3, 50])
async def test_a_batch_with_a_payload_that_is_not_json_stores_nothing(
    tables: dict[str, str], size: int
) -> None:
    # A large batch encodes its rows while the COPY streams them: the bad row, last, is met
    # after the first ones went out (psycopg sends every 32 kB), and the COPY must still store
    # none of them.
    driver = await open_pg(tables)
    try:
        batch = [make_record(n, payload={"n": n, "pad": "x" * 2000}) for n in range(size - 1)]
        batch.append(make_record(size, payload={"n": size, "bad": {1, 2}}))
        with pytest.raises(PayloadError, match=batch[-1].id):
            await driver.push_many(batch)
        assert (await driver.stats(["default"]))["default"]["pending"] == 0
        await driver.push_many(batch[:-1])  # the connection and its pool are fine
        assert (await driver.stats(["default"]))["default"]["pending"] == size - 1
    finally:
        await driver.close()


async def test_a_batch_with_a_payload_that_is_not_json_leaves_the_callers_transaction_alone(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables)
    try:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            await conn.execute("SELECT 1")
            batch = [make_record(n) for n in range(40)]
            batch.append(make_record(40, payload={"bad": object()}))
            with pytest.raises(PayloadError):
                await driver.push_many(batch, connection=conn)
            # Refused before anything was sent: the caller's transaction goes on.
            await driver.push_many(batch[:-1], connection=conn)
            await conn.commit()
        assert (await driver.stats(["default"]))["default"]["pending"] == 40
    finally:
        await driver.close()


# -- transactional dispatch --------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_dispatch_inside_the_callers_async_transaction(
    tables: dict[str, str], outcome: str
) -> None:
    async with QueueManager(manager_config(tables)) as manager:
        conn = await psycopg.AsyncConnection.connect(POSTGRES_URL)
        try:
            await conn.execute("SELECT 1")  # the caller's own work opens its transaction
            job_id = await manager.dispatch(ContractJob(n=1), connection=conn)
            batch = await manager.dispatch_batch(
                [ContractJob(n=2), ContractJob(n=3)], connection=conn
            )
            # Not visible to anyone else before the caller commits.
            assert (await manager.stats(["default"]))["default"]["pending"] == 0
            if outcome == "commit":
                await conn.commit()
            else:
                await conn.rollback()
        finally:
            await conn.close()
        pending = (await manager.stats(["default"]))["default"]["pending"]
        if outcome == "commit":
            assert pending == 3
            got = await manager.driver.reserve_many(None, lease=LEASE, limit=5)
            assert [r.id for r in got] == [job_id, *batch]
        else:
            assert pending == 0
            assert await manager.driver.reserve(None, lease=LEASE) is None


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
async def test_dispatch_inside_the_callers_sync_transaction(
    tables: dict[str, str], outcome: str
) -> None:
    async with QueueManager(manager_config(tables)) as manager:
        with psycopg.connect(POSTGRES_URL) as conn:
            job_id = await manager.dispatch(ContractJob(n=1), connection=conn)
            if outcome == "commit":
                conn.commit()
            else:
                conn.rollback()
        got = await manager.driver.reserve(None, lease=LEASE)
        if outcome == "commit":
            assert got is not None and got.id == job_id
        else:
            assert got is None


async def test_a_refused_batch_leaves_the_callers_transaction_usable(
    tables: dict[str, str],
) -> None:
    driver = await open_pg(tables)
    try:
        assert await driver.push(make_record(0, unique_key="k"))
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            await conn.execute("SELECT 1")
            with pytest.raises(DuplicateJobError):
                await driver.push_many([make_record(1, unique_key="k")], connection=conn)
            kept = make_record(2)
            assert await driver.push(kept, connection=conn)
            await conn.commit()
        assert (await driver.stats(["default"]))["default"]["pending"] == 2
    finally:
        await driver.close()


async def test_connection_must_be_psycopg(tables: dict[str, str]) -> None:
    driver = await open_pg(tables)
    try:
        with pytest.raises(TypeError, match="psycopg Connection"):
            await driver.push(make_record(), connection=object())
    finally:
        await driver.close()


# -- LISTEN/NOTIFY -----------------------------------------------------------------------------


async def test_notify_wakes_an_idle_reserve_from_another_driver(tables: dict[str, str]) -> None:
    # A poll interval longer than the wait: only the NOTIFY can end the wait early.
    idle = await open_pg(tables, poll_interval=60)
    pusher = await open_pg(tables, poll_interval=60)
    try:
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=5.0))
        await asyncio.sleep(0.5)  # the reserve is idle and listening by now
        assert not waiting.done()
        record = make_record()
        pushed_at = time.monotonic()
        await pusher.push(record)
        got = await asyncio.wait_for(waiting, 10)
        waited = time.monotonic() - pushed_at
        assert got is not None and got.id == record.id
        assert waited < 3.0, f"woke {waited:.2f}s after the push: NOTIFY did not wake it"
    finally:
        await idle.close()
        await pusher.close()


@pytest.mark.parametrize("size", [5, 50])
async def test_a_batch_wakes_an_idle_reserve_from_another_driver(
    tables: dict[str, str], size: int
) -> None:
    # A batch (one INSERT, or a COPY) sends its NOTIFY once committed, without waiting for it.
    # With a poll interval and a wait longer than the bound below, only that NOTIFY can end the
    # wait in time.
    idle = await open_pg(tables, poll_interval=60)
    pusher = await open_pg(tables)
    try:
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=60.0))
        await asyncio.sleep(0.5)  # the reserve is idle and listening by now
        assert not waiting.done()
        batch = [make_record(i) for i in range(size)]
        await pusher.push_many(batch)
        got = await asyncio.wait_for(waiting, 20)
        assert got is not None and got.id == batch[0].id
    finally:
        await idle.close()
        await pusher.close()


async def test_a_push_just_before_close_still_wakes_an_idle_reserve(
    tables: dict[str, str],
) -> None:
    # The NOTIFY follows the commit shortly after; closing the driver at once must send it
    # rather than drop it.
    idle = await open_pg(tables, poll_interval=60)
    try:
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=60.0))
        await asyncio.sleep(0.5)
        pusher = await open_pg(tables)
        record = make_record()
        assert await pusher.push(record)
        await pusher.close()
        got = await asyncio.wait_for(waiting, 10)
        assert got is not None and got.id == record.id
    finally:
        await idle.close()


async def test_a_release_wakes_an_idle_reserve_from_another_driver(tables: dict[str, str]) -> None:
    idle = await open_pg(tables, poll_interval=60)
    holder = await open_pg(tables)
    try:
        assert await holder.push(make_record())
        held = await holder.reserve(None, lease=LEASE)
        assert held is not None
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=60.0))
        await asyncio.sleep(0.5)
        assert not waiting.done()
        assert await holder.release(held)
        got = await asyncio.wait_for(waiting, 10)
        assert got is not None and got.id == held.id
    finally:
        await idle.close()
        await holder.close()


async def test_concurrent_pushes_each_wake_their_queues_reservers(tables: dict[str, str]) -> None:
    # Commits that fall together share NOTIFYs: every queue with a new job is still announced.
    queues = [f"q{i}" for i in range(4)]
    idle = [await open_pg(tables, poll_interval=60) for _ in queues]
    pusher = await open_pg(tables)
    try:
        waiting = [
            asyncio.create_task(d.reserve([q], lease=LEASE, wait=60.0))
            for d, q in zip(idle, queues, strict=True)
        ]
        await asyncio.sleep(0.5)
        records = [make_record(i, queue=q) for i, q in enumerate(queues)]
        assert all(await asyncio.gather(*(pusher.push(r) for r in records)))
        got = await asyncio.wait_for(asyncio.gather(*waiting), 10)
        assert [g.id if g else None for g in got] == [r.id for r in records]
    finally:
        for d in idle:
            await d.close()
        await pusher.close()


async def test_the_listener_reconnects_after_its_connection_is_killed(
    tables: dict[str, str],
) -> None:
    idle = await open_pg(tables, poll_interval=60)
    pusher = await open_pg(tables)
    try:
        # Start listening, then kill the listening session behind the driver's back.
        assert await idle.reserve(None, lease=LEASE, wait=0.2) is None
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s",
                [f"queuekit:{tables['table']}:listen"],
            )
            assert await cur.fetchone() == (1,)
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=8.0))
        await asyncio.sleep(1.5)  # the driver notices and listens again (backoff 0.1 s)
        record = make_record()
        pushed_at = time.monotonic()
        await pusher.push(record)
        got = await asyncio.wait_for(waiting, 15)
        assert got is not None and got.id == record.id
        assert time.monotonic() - pushed_at < 5.0, "the NOTIFY after the reconnect was missed"
    finally:
        await idle.close()
        await pusher.close()


async def test_a_rolled_back_dispatch_wakes_nobody_up(tables: dict[str, str]) -> None:
    idle = await open_pg(tables, poll_interval=60)
    pusher = await open_pg(tables)
    try:
        waiting = asyncio.create_task(idle.reserve(None, lease=LEASE, wait=1.5))
        await asyncio.sleep(0.3)
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            await conn.execute("SELECT 1")
            await pusher.push(make_record(), connection=conn)
            await conn.rollback()
        assert await asyncio.wait_for(waiting, 10) is None
    finally:
        await idle.close()
        await pusher.close()


# -- many worker processes ---------------------------------------------------------------------


@pytest.mark.slow
def test_three_worker_processes_drain_3000_jobs(tables: dict[str, str], tmp_path: Path) -> None:
    from queuekit.testing.multiprocess import drain_in_processes

    report = drain_in_processes(
        manager_config(tables),
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
def test_a_killed_worker_job_runs_again_after_its_lease(
    tables: dict[str, str], tmp_path: Path
) -> None:
    from queuekit.testing.multiprocess import kill_mid_job

    report = kill_mid_job(
        manager_config(tables, retry_after=1.0), log_path=tmp_path / "probe.log", lease=1.0
    )
    (runs,) = report.runs.values()
    assert [attempt for _, attempt, _, _ in runs] == [1, 2]
    assert runs[0][3] is None, "the killed run never finished"
    assert runs[1][3] is not None, "the re-run finished"
    assert runs[0][0] != runs[1][0], "another process ran it again"
    assert runs[1][2] > runs[0][2]
