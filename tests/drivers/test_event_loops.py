"""Every driver built from config serves one event loop after another.

A script or a synchronous web view may call ``asyncio.run`` once per request with one manager;
each call is a new event loop, and connections opened on the last one (gone with it) must not be
handed to the next. The Redis driver did that once (futures of the old loop), the MySQL driver
(its pool's connections) and the PostgreSQL one (its pipelined connections, NOTIFY timer and
LISTEN task) too; this test holds every driver to it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from queuekit.manager import QueueManager
from queuekit.testing import ContractJob
from tests.services import MYSQL_URL, POSTGRES_URL, REDIS_URL


@pytest.fixture(params=["sqlite", "file", "postgres", "mysql", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A manager config on a fresh store of each driver in turn."""
    kind = request.param
    if kind == "sqlite":
        yield {"driver": "database", "database": {"url": f"sqlite:///{tmp_path / 'jobs.db'}"}}
    elif kind == "file":
        yield {"driver": "file", "file": {"path": str(tmp_path / "queue" / "jobs.json")}}
    elif kind == "postgres":
        pytest.importorskip("psycopg")
        from tests.drivers.test_postgres import postgres_tables

        with postgres_tables() as tables:
            yield {"driver": "database", "database": {"url": POSTGRES_URL, **tables}}
    elif kind == "mysql":
        pytest.importorskip("aiomysql")
        from tests.drivers.test_mysql import mysql_tables

        with mysql_tables() as tables:
            yield {"driver": "database", "database": {"url": MYSQL_URL, **tables}}
    else:
        pytest.importorskip("redis")
        name = f"qkl{uuid.uuid4().hex[:10]}"
        yield {"driver": "redis", "redis": {"url": REDIS_URL, "prefix": name}}
        _delete_redis_prefix(name)


def _delete_redis_prefix(name: str) -> None:
    import redis

    from tests.drivers.test_redis import _delete_prefix

    client = redis.Redis.from_url(REDIS_URL)
    try:
        _delete_prefix(client, name)
    finally:
        client.close()


def test_one_manager_serves_one_event_loop_after_another(config: dict[str, Any]) -> None:
    manager = QueueManager({"queue": config})
    ContractJob.ran.clear()

    async def dispatch(n: int) -> None:
        await manager.dispatch(ContractJob(n=n))

    async def work(count: int) -> int:
        summary = await manager.start_worker(max_jobs=count, timeout=20)
        return summary.completed

    async def pending() -> int:
        return (await manager.stats(["default"]))["default"]["pending"]

    asyncio.run(dispatch(1))
    asyncio.run(dispatch(2))
    assert asyncio.run(pending()) == 2
    assert asyncio.run(work(2)) == 2
    assert sorted(ContractJob.ran) == [1, 2]
    asyncio.run(dispatch(3))
    assert asyncio.run(work(1)) == 1
    assert asyncio.run(pending()) == 0
    asyncio.run(manager.close())
