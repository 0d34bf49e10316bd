"""QueueManager: dispatch validation, batches, queues, unique jobs, dispatch_sync, drivers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest

from queuekit import (
    DuplicateJobError,
    PayloadError,
    QueueDriver,
    QueueJob,
    QueueManager,
    register_driver,
)
from queuekit.drivers import driver_names
from queuekit.drivers.memory import MemoryDriver


class Email(QueueJob):
    to: str
    queue: ClassVar[str] = "emails"
    priority: ClassVar[int] = 5
    sent: ClassVar[list[str]] = []

    async def handle(self) -> None:
        Email.sent.append(self.to)


class Plain(QueueJob):
    async def handle(self) -> None:
        return None


class HoldsAnything(QueueJob):
    thing: Any = None


class CustomJson(QueueJob):
    value: int

    def to_json(self) -> dict[str, Any]:
        return {"v": [self.value, {1, 2}] if self.value < 0 else self.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CustomJson:
        return cls(value=data["v"])


class Unique(QueueJob):
    user_id: int

    def unique_key(self) -> str:
        return f"user:{self.user_id}"


@pytest.fixture
async def qm() -> AsyncIterator[QueueManager]:
    async with QueueManager() as manager:
        Email.sent.clear()
        yield manager


async def test_dispatch_returns_unique_time_ordered_ids(qm: QueueManager) -> None:
    ids = [await qm.dispatch(Plain()) for _ in range(50)]
    assert len(set(ids)) == 50 and ids == sorted(ids)


async def test_dispatch_rejects_bad_input_at_once(qm: QueueManager) -> None:
    with pytest.raises(TypeError, match="takes a QueueJob instance, got dict"):
        await qm.dispatch({"to": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay must be >= 0"):
        await qm.dispatch(Plain(), delay=-1)
    with pytest.raises(TypeError, match="delay must be seconds"):
        await qm.dispatch(Plain(), delay="soon")  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="cannot be serialized to JSON"):
        await qm.dispatch(HoldsAnything(thing=object()))
    with pytest.raises(PayloadError, match="cannot be serialized to JSON"):
        await qm.dispatch(CustomJson(value=-1))
    assert (await qm.stats()) == {}, "nothing was stored"


async def test_custom_serialization_is_what_gets_stored(qm: QueueManager) -> None:
    record = qm.make_record(CustomJson(value=4))
    assert record.payload == {"v": 4}
    assert CustomJson.from_json(record.payload) == CustomJson(value=4)


async def test_class_settings_and_overrides(qm: QueueManager) -> None:
    record = qm.make_record(Email(to="a"))
    assert (record.queue, record.priority, record.max_retries) == ("emails", 5, 3)
    record = qm.make_record(Email(to="a"), queue="urgent", priority=9, delay=timedelta(minutes=1))
    assert (record.queue, record.priority) == ("urgent", 9)
    assert record.available_at - record.created_at == pytest.approx(60)


async def test_a_new_record_has_every_field_of_a_first_dispatch(qm: QueueManager) -> None:
    class Timed(QueueJob):
        job_name: ClassVar[str] = "tests.manager.timed"
        max_retries: ClassVar[int] = 7
        timeout: ClassVar[float | None] = 2
        key: str

        def unique_key(self) -> str:
            return f"timed:{self.key}"

    before = time.time()
    record = qm.make_record(Timed(key="k"), delay=3)
    assert before <= record.created_at <= time.time()
    assert record.available_at == pytest.approx(record.created_at + 3)
    assert record.to_json() == {
        "v": 1,
        "id": record.id,
        "job_name": "tests.manager.timed",
        "payload": {"key": "k"},
        "queue": "default",
        "priority": 0,
        "attempts": 0,
        "max_retries": 7,
        "timeout": 2.0,
        "created_at": record.created_at,
        "available_at": record.available_at,
        "reserved_until": None,
        "lease_token": None,
        "unique_key": "timed:k",
        "last_error": None,
        "failed_at": None,
        "meta": {},
    }
    assert isinstance(record.timeout, float)
    assert record.instance is not None, "the memory driver keeps the dispatched object"
    assert qm.make_record(Timed(key="k")).meta is not record.meta, "meta is never shared"


async def test_config_default_queue_applies_to_jobs_without_one() -> None:
    manager = QueueManager({"queue": {"default_queue": "general"}})
    assert manager.make_record(Plain()).queue == "general"
    assert manager.make_record(Email(to="x")).queue == "emails"


async def test_dispatch_batch_validates_everything_first(qm: QueueManager) -> None:
    with pytest.raises(PayloadError):
        await qm.dispatch_batch([Email(to="a"), HoldsAnything(thing=object()), Email(to="b")])
    assert await qm.process() is False
    ids = await qm.dispatch_batch([Email(to="a"), Email(to="b")], delay=0)
    assert len(ids) == 2
    assert await qm.dispatch_batch([]) == []


async def test_batch_with_a_delay_holds_every_job(qm: QueueManager) -> None:
    await qm.dispatch_batch([Email(to="a"), Email(to="b")], delay=30)
    assert (await qm.stats())["emails"]["delayed"] == 2


async def test_unique_jobs_refuse_a_pending_duplicate(qm: QueueManager) -> None:
    await qm.dispatch(Unique(user_id=1))
    with pytest.raises(DuplicateJobError, match="user:1"):
        await qm.dispatch(Unique(user_id=1))
    await qm.dispatch(Unique(user_id=2))
    while await qm.process():
        pass
    await qm.dispatch(Unique(user_id=1))


async def test_failed_store_through_the_manager(qm: QueueManager) -> None:
    class Broken(QueueJob):
        max_retries: ClassVar[int] = 0

        async def handle(self) -> None:
            raise RuntimeError("broken")

    ids = [await qm.dispatch(Broken()) for _ in range(3)]
    while await qm.process():
        pass
    assert [r.id for r in await qm.failed_jobs()] == ids
    assert await qm.retry_failed([ids[0]]) == 1
    assert await qm.forget_failed([ids[1]]) == 1
    assert [r.id for r in await qm.failed_jobs()] == [ids[2]]
    assert await qm.purge("default") == 1
    assert await qm.forget_failed() == 1


async def test_process_restricts_to_queues(qm: QueueManager) -> None:
    await qm.dispatch(Email(to="a"))
    assert await qm.process(queues=["default"]) is False
    assert await qm.process(queues=["default", "emails"]) is True
    assert Email.sent == ["a"]


def test_dispatch_sync_from_plain_code() -> None:
    manager = QueueManager()
    try:
        job_id = manager.dispatch_sync(Email(to="sync@example.com"))
        assert isinstance(job_id, str)

        async def check() -> Any:
            return await manager.stats()

        stats = manager._portal.call(check())
        assert stats["emails"]["pending"] == 1
    finally:
        manager.close_sync()


async def test_dispatch_sync_inside_a_loop_is_an_error(qm: QueueManager) -> None:
    with pytest.raises(RuntimeError, match="use `await dispatch\\(\\)`"):
        qm.dispatch_sync(Plain())


async def test_dispatch_sync_from_a_thread_reaches_the_running_worker(qm: QueueManager) -> None:
    worker = await qm.start_worker(run_in_background=True)
    thread = threading.Thread(target=lambda: qm.dispatch_sync(Email(to="from-thread")))
    thread.start()
    await asyncio.to_thread(thread.join, 10)
    for _ in range(200):
        if Email.sent:
            break
        await asyncio.sleep(0.01)
    await worker.stop()
    assert Email.sent == ["from-thread"]


class Recording(MemoryDriver):
    name = "recording"

    def __init__(self, options: dict[str, Any]) -> None:
        super().__init__({})
        self.options = options


def test_register_driver_and_pass_its_section() -> None:
    register_driver("recording", Recording)
    assert "recording" in driver_names()
    manager = QueueManager({"queue": {"driver": "recording", "recording": {"dsn": "x://y"}}})
    assert isinstance(manager.driver, Recording) and manager.driver.options == {"dsn": "x://y"}
    QueueManager.register_driver("recording-fn", lambda options: Recording({"via": "fn"}))
    assert QueueManager({"queue": {"driver": "recording-fn"}}).driver.options == {"via": "fn"}


def test_factory_must_return_a_driver() -> None:
    register_driver("not-a-driver", lambda options: object())
    from queuekit import ConfigError

    with pytest.raises(ConfigError, match="returned object, not a QueueDriver"):
        QueueManager({"queue": {"driver": "not-a-driver"}})


def test_entry_point_drivers_are_found(tmp_path, monkeypatch) -> None:
    dist = tmp_path / "qk_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: qk-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[queuekit.drivers]\nplugged = qk_plugin:PluggedDriver\n"
    )
    (tmp_path / "qk_plugin.py").write_text(
        "from queuekit.drivers.memory import MemoryDriver\n"
        "class PluggedDriver(MemoryDriver):\n    name = 'plugged'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "plugged" in driver_names()
    manager = QueueManager({"queue": {"driver": "plugged"}})
    assert isinstance(manager.driver, QueueDriver) and manager.driver.name == "plugged"


async def test_sync_driver_runs_at_once_and_retries_at_once() -> None:
    class FlakyOnce(QueueJob):
        calls: int = 0
        retry_delay: ClassVar[float] = 3600

        async def handle(self) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("first")

    async with QueueManager({"queue": {"driver": "sync"}}) as qm:
        job = FlakyOnce()
        await qm.dispatch(job, delay=60)
        assert job.calls == 2
        metrics = qm.get_metrics()
        assert (metrics["total_queued"], metrics["total_completed"], metrics["total_retried"]) == (
            1,
            1,
            1,
        )


async def test_sync_driver_raises_the_last_error_after_retries() -> None:
    failed: list[str] = []

    class AlwaysBad(QueueJob):
        calls: int = 0
        max_retries: ClassVar[int] = 2

        async def handle(self) -> None:
            self.calls += 1
            raise ValueError(f"bad #{self.calls}")

        def failed(self, error: BaseException) -> None:
            failed.append(str(error))

    async with QueueManager({"queue": {"driver": "sync"}}) as qm:
        job = AlwaysBad()
        with pytest.raises(ValueError, match="bad #3"):
            await qm.dispatch(job)
        assert job.calls == 3 and failed == ["bad #3"]
        assert len(await qm.failed_jobs()) == 1
        assert qm.get_metrics()["total_failed"] == 1


class CountingConnects(MemoryDriver):
    name = "counting-connects"
    connects = 0

    async def connect(self) -> None:
        await asyncio.sleep(0.01)  # a real connect yields; the race needs that
        CountingConnects.connects += 1


async def test_concurrent_first_calls_connect_once() -> None:
    CountingConnects.connects = 0
    register_driver("counting-connects", CountingConnects)
    manager = QueueManager({"queue": {"driver": "counting-connects"}})
    await asyncio.gather(*(manager.dispatch(Plain()) for _ in range(5)))
    assert CountingConnects.connects == 1
    await manager.close()


async def test_default_reserve_many_takes_up_to_limit() -> None:
    from queuekit.drivers.base import QueueDriver as Base
    from queuekit.testing import make_record

    driver = MemoryDriver()
    await driver.push_many([make_record(i) for i in range(4)])
    got = await Base.reserve_many(driver, None, lease=30, limit=3)
    assert [r.payload["n"] for r in got] == [0, 1, 2]


def test_a_driver_must_define_reserve_or_reserve_many() -> None:
    from queuekit.drivers.base import QueueDriver as Base

    with pytest.raises(TypeError, match="must define reserve\\(\\) or reserve_many\\(\\)"):

        class Neither(Base):  # type: ignore[misc]
            pass
