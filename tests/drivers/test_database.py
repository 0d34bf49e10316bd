"""What every dialect of the database driver must do alike, one test run per dialect.

Each test gets a ``Dialect``: the driver options of a queue of its own (a fresh SQLite file, or
fresh tables on the PostgreSQL and MySQL test servers, dropped afterwards) and a way to run SQL
behind the driver's back, as a buggy tool or a person with an SQL client would.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from queuekit.drivers.database import create_database_driver
from queuekit.drivers.database.schema import JOB_COLUMNS, record_to_row
from queuekit.errors import CorruptStoreError
from queuekit.testing import make_record
from tests.services import MYSQL_URL, POSTGRES_URL

LEASE = 30.0


@dataclass(frozen=True)
class Dialect:
    """A queue on one dialect: driver options, and raw SQL with the dialect's placeholder."""

    options: dict[str, Any]
    mark: str
    run: Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

    @property
    def table(self) -> str:
        """The jobs table."""
        return str(self.options["table"])

    @property
    def failed_table(self) -> str:
        """The failed jobs table."""
        return str(self.options["failed_table"])

    async def insert_row(self, row: Sequence[Any]) -> None:
        """Insert a job row in ``JOB_COLUMNS`` order without the driver."""
        marks = ", ".join(self.mark for _ in JOB_COLUMNS)
        await self.run(f"INSERT INTO {self.table} ({', '.join(JOB_COLUMNS)}) VALUES ({marks})", row)


def _sqlite(path: Path) -> Dialect:
    async def run(query: str, params: Sequence[Any]) -> list[Any]:
        with closing(sqlite3.connect(path)) as conn, conn:
            return conn.execute(query, params).fetchall()

    tables = {"table": "queue_jobs", "failed_table": "queue_failed_jobs"}
    return Dialect({"url": f"sqlite:///{path}", **tables}, "?", run)


def _postgres(tables: dict[str, str]) -> Dialect:
    import psycopg

    async def run(query: str, params: Sequence[Any]) -> list[Any]:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            cur = await conn.execute(query, params)  # type: ignore[arg-type]
            return await cur.fetchall() if cur.description else []

    return Dialect({"url": POSTGRES_URL, **tables}, "%s", run)


@pytest.fixture(params=["sqlite", "postgres", "mysql"])
def dialect(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dialect]:
    """A fresh queue on each dialect in turn."""
    if request.param == "sqlite":
        yield _sqlite(tmp_path / "jobs.db")
    elif request.param == "postgres":
        pytest.importorskip("psycopg")
        from tests.drivers.test_postgres import postgres_tables

        with postgres_tables() as tables:
            yield _postgres(tables)
    else:
        pytest.importorskip("aiomysql")
        from tests.drivers.test_mysql import mysql_tables, sql

        with mysql_tables() as tables:
            yield Dialect({"url": MYSQL_URL, **tables}, "%s", sql)


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 10])
async def test_a_row_whose_payload_is_not_json_is_named_kept_and_costs_no_other_job(
    dialect: Dialect, limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    # Made in push order: reservation order is (priority, available_at, seq).
    first = make_record(0)
    row = list(record_to_row(make_record(9, id="broken-1")))
    row[JOB_COLUMNS.index("payload")] = "{not json"
    rest = [make_record(1), make_record(2)]
    driver = create_database_driver(dialect.options)
    await driver.connect()
    try:
        await driver.push(first)
        await dialect.insert_row(row)
        await driver.push_many(rest)

        got = []
        if limit == 1:  # a job ahead of the damaged row is handed out as usual
            got += await driver.reserve_many(None, lease=LEASE, limit=1)
            assert [r.id for r in got] == [first.id]
        with pytest.raises(CorruptStoreError) as caught:
            await driver.reserve_many(None, lease=LEASE, limit=limit)
        message = str(caught.value)
        assert f"table '{dialect.table}' row 'broken-1'" in message
        assert "'payload' is not valid JSON" in message
        assert dialect.failed_table in message

        # Every readable job is still handed out, in order, and charged no attempt for the
        # damaged row's error (a batch it spoiled was handed back).
        for _ in range(3):
            got += await driver.reserve_many(None, lease=LEASE, limit=limit)
        assert [r.id for r in got] == [first.id, *(r.id for r in rest)]
        assert [r.attempts for r in got] == [1, 1, 1]
        assert await driver.complete_many(got) == [True, True, True]
        assert await driver.reserve(None, lease=LEASE) is None

        # The damaged row left the queue for the failed table byte for byte, with the error.
        kept = await dialect.run(
            f"SELECT payload, last_error FROM {dialect.failed_table} WHERE id = {dialect.mark}",
            ["broken-1"],
        )
        ((payload, last_error),) = kept
        assert payload == "{not json"
        assert "broken-1" in last_error and "not valid JSON" in last_error
        stats = (await driver.stats(["default"]))["default"]
        assert stats == {"pending": 0, "delayed": 0, "reserved": 0, "failed": 1}
        with caplog.at_level(logging.ERROR):
            assert await driver.failed() == []
        assert "broken-1" in caplog.text, "an unreadable failed row is skipped loudly"
        assert await driver.forget_failed(["broken-1"]) == 1
    finally:
        await driver.close()
