"""The MySQL/MariaDB dialect of the database driver, against the real server.

The contract suite, restarts, a corrupt row, transactional dispatch (both outcomes) and many
worker processes. Every test uses tables of its own, dropped afterwards, since several test runs
share the server.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from queuekit.drivers.database.schema import (
    JOB_COLUMNS,
    SCHEMA_TABLE,
    SCHEMA_VERSION,
    record_to_row,
)
from queuekit.errors import ConfigError, CorruptStoreError, DriverError, DuplicateJobError
from queuekit.manager import QueueManager
from queuekit.testing import ContractJob, DriverContract, make_record
from queuekit.testing.multiprocess import drain_in_processes, kill_mid_job
from tests.services import MYSQL_URL, require_service

aiomysql = pytest.importorskip("aiomysql")

from queuekit.drivers.database.mysql import MySQLDriver, drop_tables  # noqa: E402

LEASE = 30.0


def _server_reachable() -> None:
    async def ping() -> None:
        driver = MySQLDriver({"url": MYSQL_URL})
        conn = await aiomysql.connect(**{**driver._connect_kwargs, "connect_timeout": 3})
        conn.close()

    try:
        asyncio.run(ping())
    except Exception as e:
        require_service("MariaDB/MySQL", e)


@contextmanager
def mysql_tables() -> Iterator[dict[str, str]]:
    """Fresh table names; the tables and their schema rows are dropped on leaving."""
    _server_reachable()
    name = f"qk_{uuid.uuid4().hex[:12]}"
    names = {"table": name, "failed_table": f"{name}_failed"}
    try:
        yield names
    finally:
        asyncio.run(drop_tables({"url": MYSQL_URL, **names}))


@pytest.fixture
def tables() -> Iterator[dict[str, str]]:
    """Fresh table names for one test, dropped after it."""
    with mysql_tables() as names:
        yield names


def mysql_options(tables: dict[str, str], **extra: Any) -> dict[str, Any]:
    """Options of the test's tables (a short poll keeps cross-process tests quick)."""
    return {"url": MYSQL_URL, "poll_interval": 0.05, **tables, **extra}


async def open_mysql(tables: dict[str, str], **extra: Any) -> MySQLDriver:
    """A connected driver on the test's tables."""
    driver = MySQLDriver(mysql_options(tables, **extra))
    await driver.connect()
    return driver


async def sql(query: str, params: Any = None) -> list[Any]:
    """Run one statement on a connection of its own (autocommit); returns the rows."""
    kwargs = MySQLDriver({"url": MYSQL_URL})._connect_kwargs
    conn = await aiomysql.connect(**kwargs)
    try:
        async with conn.cursor() as cur:
            await cur.execute(query, params)
            return list(await cur.fetchall())
    finally:
        conn.close()


class TestMySQLDriver(DriverContract):
    @pytest.fixture
    async def driver(self, tables: dict[str, str]) -> AsyncIterator[MySQLDriver]:
        d = await open_mysql(tables)
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, tables: dict[str, str]) -> Callable[[], Awaitable[MySQLDriver]]:
        async def _open() -> MySQLDriver:
            return await open_mysql(tables)

        return _open


# -- schema and restarts -----------------------------------------------------------------------


async def test_jobs_survive_close_and_reopen(tables: dict[str, str]) -> None:
    config = {"queue": {"driver": "database", "database": mysql_options(tables)}}
    async with QueueManager(config) as manager:
        first = await manager.dispatch(ContractJob(n=1))
        await manager.dispatch(ContractJob(n=2), delay=60)
        batch = await manager.dispatch_batch([ContractJob(n=3), ContractJob(n=4)])
        failing = await manager.dispatch(ContractJob(n=5), queue="doomed")
        leased = await manager.driver.reserve(["doomed"], lease=LEASE)
        assert leased is not None and leased.id == failing
        assert await manager.driver.fail(leased, "RuntimeError: kept across restarts")

    async with QueueManager(config) as manager:
        stats = await manager.stats(["default", "doomed"])
        assert stats["default"] == {"pending": 3, "delayed": 1, "reserved": 0, "failed": 0}
        assert stats["doomed"]["failed"] == 1
        taken = await manager.driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in taken] == [first, *batch]
        (failed,) = await manager.failed_jobs()
        assert failed.id == failing and failed.last_error == "RuntimeError: kept across restarts"


async def test_schema_version_is_recorded(tables: dict[str, str]) -> None:
    await (await open_mysql(tables)).close()
    rows = await sql(
        f"SELECT table_name, version FROM {SCHEMA_TABLE} WHERE table_name IN (%s, %s)",
        (tables["table"], tables["failed_table"]),
    )
    assert dict(rows) == {tables["table"]: SCHEMA_VERSION, tables["failed_table"]: SCHEMA_VERSION}


async def test_a_newer_schema_is_refused(tables: dict[str, str]) -> None:
    await (await open_mysql(tables)).close()
    await sql(f"UPDATE {SCHEMA_TABLE} SET version = 99 WHERE table_name = %s", (tables["table"],))
    driver = MySQLDriver(mysql_options(tables))
    with pytest.raises(DriverError, match="has schema version 99"):
        await driver.connect()


def test_bad_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="name the database"):
        MySQLDriver({"url": "mysql://root@127.0.0.1:3306/"})
    with pytest.raises(ConfigError, match="unknown MySQL option"):
        MySQLDriver({"url": "mysql://root@127.0.0.1/test?ssl=yes"})


async def test_an_unreachable_server_is_a_driver_error() -> None:
    driver = MySQLDriver({"url": "mysql://root@127.0.0.1:1/test", "connect_timeout": 2})
    with pytest.raises(DriverError, match=r"127\.0\.0\.1:1: cannot connect"):
        await driver.connect()


# -- bad input ---------------------------------------------------------------------------------

# A job row whose payload is not JSON: test_database.py, for every dialect.


async def test_completing_beside_a_corrupt_row_completes_and_leaves_the_error_to_reserve(
    tables: dict[str, str],
) -> None:
    driver = await open_mysql(tables)
    try:
        await driver.push(make_record(1))
        row = list(record_to_row(make_record(0, id="bad-next-row")))
        row[JOB_COLUMNS.index("payload")] = "{not json"
        marks = ", ".join("%s" for _ in JOB_COLUMNS)
        await sql(f"INSERT INTO {tables['table']} ({', '.join(JOB_COLUMNS)}) VALUES ({marks})", row)
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


async def test_complete_and_reserve_is_one_transaction(tables: dict[str, str]) -> None:
    driver = await open_mysql(tables)
    try:
        await driver.push_many([make_record(1), make_record(2)])
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        transactions = 0
        original = driver._db.transaction

        async def counted(body: Callable[[Any], Awaitable[Any]]) -> Any:
            nonlocal transactions
            transactions += 1
            return await original(body)

        driver._db.transaction = counted  # type: ignore[method-assign]
        completed, taken = await driver.complete_and_reserve(first, None, lease=LEASE)
        assert (completed, [r.job_name for r in taken]) == (True, [first.job_name])
        assert transactions == 1
        assert taken[0].attempts == 1 and taken[0].id != first.id
        assert (await driver.stats(["default"]))["default"] == {
            "pending": 0,
            "delayed": 0,
            "reserved": 1,
            "failed": 0,
        }
    finally:
        await driver.close()


# -- transactional dispatch --------------------------------------------------------------------


async def _caller_connection() -> Any:
    return await aiomysql.connect(**MySQLDriver({"url": MYSQL_URL})._connect_kwargs)


async def test_dispatch_inside_a_committed_transaction_stores_the_job(
    tables: dict[str, str],
) -> None:
    config = {"queue": {"driver": "database", "database": mysql_options(tables)}}
    async with QueueManager(config) as manager:
        conn = await _caller_connection()
        try:
            await conn.begin()
            job_id = await manager.dispatch(ContractJob(n=1), connection=conn)
            ids = await manager.dispatch_batch(
                [ContractJob(n=2), ContractJob(n=3)], connection=conn
            )
            assert await manager.driver.reserve(None, lease=LEASE) is None, "not committed yet"
            await conn.commit()
        finally:
            conn.close()
        taken = await manager.driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in taken] == [job_id, *ids]


async def test_dispatch_inside_a_rolled_back_transaction_leaves_no_job(
    tables: dict[str, str],
) -> None:
    config = {"queue": {"driver": "database", "database": mysql_options(tables)}}
    async with QueueManager(config) as manager:
        conn = await _caller_connection()
        try:
            await conn.begin()
            await manager.dispatch(ContractJob(n=1), connection=conn)
            await manager.dispatch_batch([ContractJob(n=2)], connection=conn)
            await conn.rollback()
        finally:
            conn.close()
        assert await manager.driver.reserve(None, lease=LEASE) is None
        assert (await manager.stats(["default"]))["default"]["pending"] == 0


async def test_a_refused_batch_leaves_the_callers_transaction_as_it_was(
    tables: dict[str, str],
) -> None:
    driver = await open_mysql(tables)
    conn = await _caller_connection()
    try:
        await conn.begin()
        kept = make_record(1)
        assert await driver.push(kept, connection=conn)
        batch = [make_record(2, unique_key="k"), make_record(3, unique_key="k")]
        with pytest.raises(DuplicateJobError):
            await driver.push_many(batch, connection=conn)
        await conn.commit()
        got = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in got] == [kept.id]
        with pytest.raises(DriverError, match=r"must be an aiomysql\.Connection"):
            await driver.push(make_record(), connection=object())
    finally:
        conn.close()
        await driver.close()


# -- many processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_three_processes_drain_3000_jobs(tables: dict[str, str], tmp_path: Path) -> None:
    config = {"queue": {"driver": "database", "database": mysql_options(tables)}}
    report = drain_in_processes(config, jobs=3000, processes=3, log_path=tmp_path / "probe.log")
    assert report.missing == []
    assert report.overlapping == []
    assert report.repeated == [], "no lease ran out, so no job may run twice"
    assert len(report.per_process) == 3, f"every process took work: {report.per_process}"


@pytest.mark.slow
def test_a_job_of_a_killed_worker_runs_again_after_its_lease(
    tables: dict[str, str], tmp_path: Path
) -> None:
    lease = 1.0
    config = {"queue": {"driver": "database", "database": mysql_options(tables, retry_after=lease)}}
    report = kill_mid_job(config, log_path=tmp_path / "probe.log", lease=lease)
    (job_id,) = report.dispatched
    runs = report.runs[job_id]
    assert [r[1] for r in runs] == [1, 2], "attempt 1 died with its worker, attempt 2 finished"
    assert runs[0][3] is None and runs[1][3] is not None
    assert runs[1][2] >= runs[0][2] + lease * 0.9, "re-run only once the lease ran out"
