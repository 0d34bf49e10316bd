"""The SQLite dialect of the database driver: the contract, restarts, bad rows, transactions,
and the group commit of its connection thread."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest

from queuekit.drivers.database.schema import (
    JOB_COLUMNS,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    record_to_row,
)
from queuekit.drivers.database.sqlite import SQLiteDriver
from queuekit.drivers.database.sqlite_thread import READ, WRITE, ConnectionThread
from queuekit.errors import ConfigError, CorruptStoreError, DriverError, DuplicateJobError
from queuekit.manager import QueueManager
from queuekit.testing import ContractJob, DriverContract, make_record
from queuekit.testing.multiprocess import drain_in_processes, kill_mid_job

LEASE = 30.0


def sqlite_options(path: Path, **extra: object) -> dict[str, object]:
    """Options of a SQLite queue in ``path`` (a short poll keeps cross-process tests quick)."""
    return {"url": f"sqlite:///{path}", "poll_interval": 0.05, **extra}


class TestSQLiteDriver(DriverContract):
    @pytest.fixture
    async def driver(self, tmp_path: Path) -> AsyncIterator[SQLiteDriver]:
        d = SQLiteDriver(sqlite_options(tmp_path / "jobs.db"))
        await d.connect()
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, tmp_path: Path) -> Callable[[], Awaitable[SQLiteDriver]]:
        async def _open() -> SQLiteDriver:
            d = SQLiteDriver(sqlite_options(tmp_path / "jobs.db"))
            await d.connect()
            return d

        return _open


async def open_sqlite(path: Path, **extra: object) -> SQLiteDriver:
    """A connected driver on the queue file ``path``."""
    driver = SQLiteDriver(sqlite_options(path, **extra))
    await driver.connect()
    return driver


# -- restarts ----------------------------------------------------------------------------------


async def test_jobs_survive_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "queue" / "jobs.db"
    config = {"queue": {"driver": "database", "database": sqlite_options(path)}}
    async with QueueManager(config) as manager:
        first = await manager.dispatch(ContractJob(n=1))
        later = await manager.dispatch(ContractJob(n=2), delay=60)
        batch = await manager.dispatch_batch([ContractJob(n=3), ContractJob(n=4)])
        failing = await manager.dispatch(ContractJob(n=5), queue="doomed")
        leased = await manager.driver.reserve(["doomed"], lease=LEASE)
        assert leased is not None and leased.id == failing
        assert await manager.driver.fail(leased, "RuntimeError: kept across restarts")

    async with QueueManager(config) as manager:
        stats = await manager.stats(["default", "doomed"])
        assert stats["default"] == {"pending": 3, "delayed": 1, "reserved": 0, "failed": 0}
        assert stats["doomed"]["failed"] == 1
        order = []
        for _ in range(3):
            got = await manager.driver.reserve(None, lease=LEASE)
            assert got is not None
            order.append(got.id)
            assert await manager.driver.complete(got)
        assert order == [first, *batch]
        assert await manager.driver.reserve(None, lease=LEASE) is None, "delayed job held back"
        (failed,) = await manager.failed_jobs()
        assert failed.id == failing and failed.last_error == "RuntimeError: kept across restarts"
        assert await manager.retry_failed() == 1
        got = await manager.driver.reserve(["doomed"], lease=LEASE)
        assert got is not None and got.id == failing and got.attempts == 1
        assert later not in order


async def test_schema_version_is_recorded(tmp_path: Path) -> None:
    driver = await open_sqlite(tmp_path / "jobs.db")
    await driver.close()
    with closing(sqlite3.connect(tmp_path / "jobs.db")) as conn:
        rows = dict(conn.execute(f"SELECT table_name, version FROM {SCHEMA_TABLE}"))
    assert rows == {"queue_jobs": SCHEMA_VERSION, "queue_failed_jobs": SCHEMA_VERSION}


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await (await open_sqlite(path)).close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(f"UPDATE {SCHEMA_TABLE} SET version = 99 WHERE table_name = 'queue_jobs'")
    driver = SQLiteDriver(sqlite_options(path))
    with pytest.raises(DriverError, match=r"'queue_jobs' has schema version 99"):
        await driver.connect()


# -- bad input ---------------------------------------------------------------------------------

# A job row whose payload is not JSON: test_database.py, for every dialect.


def _insert_raw(path: Path, payload: str, job_id: str) -> None:
    """Write a job row behind the driver's back, as a buggy tool or a bad disk would."""
    record = make_record(0, id=job_id)
    row = list(record_to_row(record))
    row[JOB_COLUMNS.index("payload")] = payload
    with closing(sqlite3.connect(path)) as conn, conn:
        marks = ", ".join("?" for _ in JOB_COLUMNS)
        conn.execute(f"INSERT INTO queue_jobs ({', '.join(JOB_COLUMNS)}) VALUES ({marks})", row)


async def test_a_corrupt_row_in_a_batch_does_not_cost_the_others(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_sqlite(path)
    try:
        good = [make_record(i) for i in range(3)]
        await driver.push(good[0])
        _insert_raw(path, '"a string, not an object"', "bad-batch-row")
        await driver.push_many(good[1:])
        with pytest.raises(CorruptStoreError, match="bad-batch-row"):
            await driver.reserve_many(None, lease=LEASE, limit=10)
        got = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in got] == [r.id for r in good]
        assert all(r.attempts == 1 for r in got), "handing back undid the counted attempt"
    finally:
        await driver.close()


async def test_a_worker_drains_around_a_corrupt_row(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    config = {
        "queue": {
            "driver": "database",
            "database": sqlite_options(path),
            "worker": {"idle_wait": 0.1},
        }
    }
    ContractJob.ran.clear()
    async with QueueManager(config) as manager:
        await manager.dispatch(ContractJob(n=1))
        _insert_raw(path, "\x00garbage", "bad-worker-row")
        await manager.dispatch(ContractJob(n=2))
        summary = await manager.start_worker(max_jobs=2, timeout=30)
        assert summary.completed == 2
        assert sorted(ContractJob.ran) == [1, 2]
        assert (await manager.stats(["default"]))["default"]["failed"] == 1


async def test_completing_beside_a_corrupt_row_completes_and_leaves_the_error_to_reserve(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_sqlite(path)
    try:
        await driver.push(make_record(1))
        _insert_raw(path, "{not json", "bad-next-row")
        after = make_record(2)
        await driver.push(after)
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        # The completion stands and nothing is left leased; reserve() reports the bad row.
        assert await driver.complete_and_reserve(first, None, lease=LEASE) == (True, [])
        assert (await driver.stats(["default"]))["default"]["reserved"] == 0
        with pytest.raises(CorruptStoreError, match="bad-next-row"):
            await driver.reserve(None, lease=LEASE)
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and got.id == after.id and got.attempts == 1
    finally:
        await driver.close()


async def test_complete_and_reserve_is_one_write_transaction(tmp_path: Path) -> None:
    driver = await open_sqlite(tmp_path / "jobs.db")
    try:
        await driver.push_many([make_record(1), make_record(2)])
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        statements: list[str] = []
        # The connection belongs to the driver's thread: install the trace from there.
        await driver._call(READ, lambda conn: conn.set_trace_callback(statements.append))
        completed, taken = await driver.complete_and_reserve(first, None, lease=LEASE)
        await driver._call(READ, lambda conn: conn.set_trace_callback(None))
        assert completed is True and len(taken) == 1
        assert [s.split()[0] for s in statements] == ["BEGIN", "DELETE", "UPDATE", "COMMIT"]
    finally:
        await driver.close()


async def test_a_file_that_is_not_a_database_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    garbage = b"this is not an SQLite file\n" * 200
    path.write_bytes(garbage)
    driver = SQLiteDriver(sqlite_options(path))
    with pytest.raises(CorruptStoreError, match=r"jobs\.db.*not a database"):
        await driver.connect()
    assert path.read_bytes() == garbage


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://host/jobs.db", "has no host"),
        ("sqlite:///:memory:", "in-memory database would lose every job"),
        ("sqlite:///jobs.db?journal=off", "unknown SQLite option"),
        ("sqlite:///jobs.db?synchronous=sometimes", "synchronous must be one of"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SQLiteDriver({"url": url})


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"queue\.database\.retry_after"):
        SQLiteDriver({"url": "sqlite:///jobs.db", "retry_after": 0})
    with pytest.raises(ConfigError, match=r"queue\.database\.table"):
        SQLiteDriver({"url": "sqlite:///jobs.db", "table": "jobs; DROP TABLE users"})


# -- transactional dispatch --------------------------------------------------------------------


async def test_dispatch_inside_a_committed_transaction_stores_the_job(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    config = {"queue": {"driver": "database", "database": sqlite_options(path)}}
    async with QueueManager(config) as manager:
        conn = sqlite3.connect(path)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
            conn.commit()
            conn.execute("INSERT INTO orders (id) VALUES (1)")
            job_id = await manager.dispatch(ContractJob(n=1), connection=conn)
            ids = await manager.dispatch_batch(
                [ContractJob(n=2), ContractJob(n=3)], connection=conn
            )
            # Not visible to anyone else before the commit. (A reservation would wait for the
            # write lock the open transaction holds; counting only reads.)
            assert (await manager.stats(["default"]))["default"]["pending"] == 0
            conn.commit()
        finally:
            conn.close()
        taken = []
        for _ in range(3):
            got = await manager.driver.reserve(None, lease=LEASE)
            assert got is not None
            taken.append(got.id)
        assert taken == [job_id, *ids]


async def test_dispatch_inside_a_rolled_back_transaction_leaves_no_job(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    config = {"queue": {"driver": "database", "database": sqlite_options(path)}}
    async with QueueManager(config) as manager:
        conn = sqlite3.connect(path)
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
            conn.commit()
            conn.execute("INSERT INTO orders (id) VALUES (1)")
            await manager.dispatch(ContractJob(n=1), connection=conn)
            await manager.dispatch_batch([ContractJob(n=2)], connection=conn)
            conn.rollback()
            assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        finally:
            conn.close()
        assert await manager.driver.reserve(None, lease=LEASE) is None
        assert (await manager.stats(["default"]))["default"]["pending"] == 0


async def test_a_refused_batch_leaves_the_callers_transaction_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    driver = await open_sqlite(path)
    conn = sqlite3.connect(path)
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")
        conn.commit()
        conn.execute("INSERT INTO orders (id) VALUES (1)")
        kept = make_record(1)
        await driver.push(kept, connection=conn)
        batch = [make_record(2, unique_key="k"), make_record(3, unique_key="k")]
        with pytest.raises(DuplicateJobError):
            await driver.push_many(batch, connection=conn)
        conn.commit()
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    finally:
        conn.close()
    try:
        got = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in got] == [kept.id]
    finally:
        await driver.close()


async def test_a_connection_to_another_file_is_refused(tmp_path: Path) -> None:
    driver = await open_sqlite(tmp_path / "jobs.db")
    conn = sqlite3.connect(tmp_path / "other.db")
    try:
        with pytest.raises(DriverError, match="not on the queue's file"):
            await driver.push(make_record(), connection=conn)
        with pytest.raises(DriverError, match=r"must be a sqlite3\.Connection"):
            await driver.push(make_record(), connection=object())
    finally:
        conn.close()
        await driver.close()


# -- group commit ------------------------------------------------------------------------------


class GroupSpy:
    """Records how many operations each transaction of the connection thread ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        run_group = ConnectionThread._run_group

        def spy(thread: ConnectionThread, ops: list, outcomes: list) -> None:  # type: ignore[type-arg]
            self.sizes.append(len(ops))
            run_group(thread, ops, outcomes)

        monkeypatch.setattr(ConnectionThread, "_run_group", spy)


async def queued_behind_the_write_lock(
    path: Path, driver: SQLiteDriver, *calls: Awaitable[object]
) -> list[object]:
    """Run ``calls`` while another connection holds the write lock, so they queue up.

    A first push waits on the lock inside the connection thread; the calls made meanwhile wait
    in its queue and reach it as one batch when the lock is released. Returns their results
    (an exception where one raised).
    """
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        first = asyncio.ensure_future(driver.push(make_record(100)))
        await asyncio.sleep(0.2)  # the thread is now waiting for the lock
        queued = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.2)
        assert not first.done() and not any(q.done() for q in queued), "nothing passed the lock"
    finally:
        blocker.rollback()
        blocker.close()
    assert await first
    return list(await asyncio.gather(*queued, return_exceptions=True))


async def test_queued_writes_commit_together_and_a_failing_one_is_undone_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_sqlite(path)
    try:
        done, waiting = make_record(1), make_record(2)
        await driver.push_many([done, waiting])
        leased = await driver.reserve(None, lease=LEASE)
        assert leased is not None and leased.id == done.id
        spy = GroupSpy(monkeypatch)
        pushed = make_record(3)
        results = await queued_behind_the_write_lock(
            path,
            driver,
            driver.complete(leased),
            driver.push_many([make_record(4, unique_key="k"), make_record(5, unique_key="k")]),
            driver.push(pushed),
            driver.reserve(None, lease=LEASE),
        )
        assert 4 in spy.sizes, f"the four queued writes shared one transaction: {spy.sizes}"
        completed, refused, stored, reserved = results
        assert completed is True
        assert isinstance(refused, DuplicateJobError)
        assert stored is True
        assert isinstance(reserved, type(leased)) and reserved.id == waiting.id
    finally:
        await driver.close()
    # Another connection sees exactly the committed effects: the refused batch left no row.
    with closing(sqlite3.connect(path)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM queue_jobs")}
    assert done.id not in ids
    assert {waiting.id, pushed.id} <= ids
    assert len(ids) == 3, "the first push, the reserved job and the pushed one; no batch row"


async def test_a_transaction_sqlite_abandons_is_run_again_without_the_failing_write(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_sqlite(path)
    before, after = make_record(1), make_record(2)

    def abandon(conn: sqlite3.Connection) -> None:
        # What SQLite does on a disk-full or I/O error: the whole transaction is gone.
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    try:
        results = await queued_behind_the_write_lock(
            path, driver, driver.push(before), driver._call(WRITE, abandon), driver.push(after)
        )
        assert results[0] is True and results[2] is True
        assert isinstance(results[1], DriverError) and "disk I/O error" in str(results[1])
        got = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in got if r.id in (before.id, after.id)] == [before.id, after.id]
    finally:
        await driver.close()


async def test_close_runs_the_operations_queued_before_it(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    driver = await open_sqlite(path)
    record = make_record(1)
    pushing = asyncio.ensure_future(driver.push(record))
    await asyncio.sleep(0)  # the push is queued before the close
    await driver.close()
    assert await pushing is True
    with pytest.raises(DriverError, match="not connected"):
        await driver.push(make_record(2))
    reopened = await open_sqlite(path)
    try:
        got = await reopened.reserve(None, lease=LEASE)
        assert got is not None and got.id == record.id
    finally:
        await reopened.close()


# -- many processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_three_processes_drain_3000_jobs(tmp_path: Path) -> None:
    config = {"queue": {"driver": "database", "database": sqlite_options(tmp_path / "jobs.db")}}
    report = drain_in_processes(config, jobs=3000, processes=3, log_path=tmp_path / "probe.log")
    assert report.missing == []
    assert report.overlapping == []
    assert report.repeated == [], "no lease ran out, so no job may run twice"
    assert len(report.per_process) == 3, f"every process took work: {report.per_process}"


@pytest.mark.slow
def test_a_job_of_a_killed_worker_runs_again_after_its_lease(tmp_path: Path) -> None:
    lease = 1.0
    options = sqlite_options(tmp_path / "jobs.db", retry_after=lease)
    config = {"queue": {"driver": "database", "database": options}}
    report = kill_mid_job(config, log_path=tmp_path / "probe.log", lease=lease)
    (job_id,) = report.dispatched
    runs = report.runs[job_id]
    assert [r[1] for r in runs] == [1, 2], "attempt 1 died with its worker, attempt 2 finished"
    assert runs[0][3] is None and runs[1][3] is not None
    assert runs[1][2] >= runs[0][2] + lease * 0.9, "re-run only once the lease ran out"
