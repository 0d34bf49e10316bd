"""``DriverContract``: the one test suite every queue driver passes.

Subclass it in a test module and provide a ``driver`` fixture (a connected driver on an empty
store); persistent drivers also provide ``open_driver``, an async callable that opens another
connected driver on the same store (what a second process would see). Tests are gated on the
driver's ``capabilities``. Requires pytest with pytest-asyncio in auto mode.

Example::

    class TestMyDriver(DriverContract):
        @pytest.fixture
        async def driver(self, tmp_path):
            d = MyDriver({"path": str(tmp_path / "q")})
            await d.connect()
            yield d
            await d.close()
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from ..clock import new_id, now
from ..drivers.base import Capability, QueueDriver
from ..errors import PayloadError
from ..manager import QueueManager
from ..record import JobRecord
from .jobs import AlwaysFails, ContractJob

__all__ = ["DriverContract", "make_record"]

LEASE = 30.0
SHORT = 0.3  # a lease or delay that a test waits out; long enough for a loaded 2-core machine


def make_record(n: int = 0, *, queue: str = "default", **fields: Any) -> JobRecord:
    """A record of ``ContractJob(n=n)`` ready to push."""
    t = now()
    values: dict[str, Any] = {
        "id": new_id(),
        "job_name": ContractJob.job_name,
        "payload": {"n": n},
        "queue": queue,
        "created_at": t,
        "available_at": t,
    }
    values.update(fields)
    return JobRecord(**values)


def _needs(driver: QueueDriver, capability: Capability) -> None:
    if capability not in driver.capabilities:
        pytest.skip(f"{type(driver).__name__} lacks {capability.name}")


async def _drain_ids(driver: QueueDriver, queues: list[str] | None = None) -> list[str]:
    ids = []
    for _ in range(10_000):
        record = await driver.reserve(queues, lease=LEASE)
        if record is None:
            return ids
        ids.append(record.id)
        assert await driver.complete(record)
    raise AssertionError("queue did not drain in 10,000 reservations")


class DriverContract:
    """The driver contract; see the module docstring for how to use it."""

    @pytest.fixture
    async def driver(self) -> AsyncIterator[QueueDriver]:
        """Override: yield a connected driver on an empty store, close it afterwards."""
        raise NotImplementedError("a DriverContract subclass must define the `driver` fixture")
        yield  # pragma: no cover

    @pytest.fixture
    def open_driver(self) -> Callable[[], Awaitable[QueueDriver]] | None:
        """Override for persistent drivers: an async callable opening the same store again."""
        return None

    @pytest.fixture
    async def second(
        self, driver: QueueDriver, open_driver: Callable[[], Awaitable[QueueDriver]] | None
    ) -> AsyncIterator[QueueDriver]:
        """Another handle on the same store (the same driver for in-process drivers)."""
        if open_driver is None:
            if Capability.PERSISTENT in driver.capabilities:
                pytest.fail("a PERSISTENT driver must provide the `open_driver` fixture")
            yield driver
            return
        other = await open_driver()
        try:
            yield other
        finally:
            await other.close()

    # -- push and reserve ----------------------------------------------------------------

    async def test_reserve_on_empty_store_returns_none(self, driver: QueueDriver) -> None:
        assert await driver.reserve(["default"], lease=LEASE) is None
        assert await driver.reserve(None, lease=LEASE) is None

    async def test_push_then_reserve_leases_the_record(self, driver: QueueDriver) -> None:
        pushed = make_record(7, meta={"trace": "abc"}, max_retries=4, timeout=12.5)
        assert await driver.push(pushed) is True
        before = now()
        got = await driver.reserve(["default"], lease=LEASE)
        assert got is not None
        assert got.id == pushed.id
        assert got.job_name == pushed.job_name
        assert got.payload == {"n": 7}
        assert got.meta == {"trace": "abc"}
        assert (got.max_retries, got.timeout) == (4, 12.5)
        assert got.created_at == pytest.approx(pushed.created_at, abs=1e-3)
        assert got.attempts == 1, "reserve counts the attempt"
        assert got.lease_token
        assert got.reserved_until is not None
        assert before + LEASE - 2 <= got.reserved_until <= now() + LEASE + 2
        assert await driver.reserve(["default"], lease=LEASE) is None, (
            "a leased job is not handed out twice"
        )

    async def test_each_reservation_gets_a_fresh_token(self, driver: QueueDriver) -> None:
        await driver.push(make_record())
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        token = first.lease_token
        first.attempts = 0
        assert await driver.release(first)
        again = await driver.reserve(None, lease=LEASE)
        assert again is not None and again.lease_token not in (None, token)

    async def test_same_priority_runs_in_push_order(self, driver: QueueDriver) -> None:
        t = now()
        records = [make_record(i, created_at=t, available_at=t) for i in range(6)]
        for record in records:
            await driver.push(record)
        assert await _drain_ids(driver) == [r.id for r in records]

    async def test_higher_priority_first(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.PRIORITY)
        low, high, mid = make_record(1, priority=-5), make_record(2, priority=10), make_record(3)
        for record in (low, high, mid):
            await driver.push(record)
        assert await _drain_ids(driver) == [high.id, mid.id, low.id]

    async def test_older_available_at_first_within_a_priority(self, driver: QueueDriver) -> None:
        t = now()
        newer = make_record(1, available_at=t - 5)
        older = make_record(2, available_at=t - 50)
        await driver.push(newer)
        await driver.push(older)
        assert await _drain_ids(driver) == [older.id, newer.id]

    async def test_queues_are_separate_and_tried_in_order(self, driver: QueueDriver) -> None:
        a, b = make_record(1, queue="qa"), make_record(2, queue="qb")
        await driver.push(a)
        await driver.push(b)
        assert await driver.reserve(["nothing"], lease=LEASE) is None
        got = await driver.reserve(["qb", "qa"], lease=LEASE)
        assert got is not None and got.id == b.id
        got = await driver.reserve(["qb", "qa"], lease=LEASE)
        assert got is not None and got.id == a.id

    async def test_none_means_every_queue(self, driver: QueueDriver) -> None:
        await driver.push(make_record(1, queue="q1"))
        await driver.push(make_record(2, queue="q2"))
        got = [await driver.reserve(None, lease=LEASE) for _ in range(2)]
        assert sorted(r.queue for r in got if r is not None) == ["q1", "q2"]

    async def test_record_fields_round_trip(self, driver: QueueDriver) -> None:
        pushed = make_record(
            3,
            queue="rt",
            priority=2,
            max_retries=9,
            timeout=1.5,
            meta={"nested": {"a": [1, 2]}, "s": "é"},
            last_error=None,
        )
        await driver.push(pushed)
        got = await driver.reserve(["rt"], lease=LEASE)
        assert got is not None
        expected = pushed.to_json()
        actual = got.to_json()
        for key in ("reserved_until", "lease_token", "attempts"):
            expected.pop(key)
            actual.pop(key)
        for key in ("created_at", "available_at"):
            assert actual.pop(key) == pytest.approx(expected.pop(key), abs=1e-3)
        assert actual == expected

    # -- delays and waiting --------------------------------------------------------------

    async def test_delayed_job_waits_until_available_at(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.DELAY)
        record = make_record(available_at=now() + SHORT)
        await driver.push(record)
        assert await driver.reserve(None, lease=LEASE) is None
        stats = await driver.stats(["default"])
        assert stats["default"]["delayed"] == 1 and stats["default"]["pending"] == 0
        await asyncio.sleep(SHORT + 0.1)
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and got.id == record.id

    async def test_reserve_wait_returns_none_after_waiting(self, driver: QueueDriver) -> None:
        started = time.monotonic()
        assert await driver.reserve(["default"], lease=LEASE, wait=0.3) is None
        assert time.monotonic() - started >= 0.25, "reserve(wait=...) must wait before giving up"

    async def test_reserve_wait_picks_up_a_job_pushed_meanwhile(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        waiting = asyncio.create_task(driver.reserve(["default"], lease=LEASE, wait=10.0))
        await asyncio.sleep(0.1)
        record = make_record()
        await second.push(record)
        got = await asyncio.wait_for(waiting, 15.0)
        assert got is not None and got.id == record.id

    async def test_reserve_wait_on_several_queues_wakes_for_any_of_them(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        waiting = asyncio.create_task(driver.reserve(["qa", "qb"], lease=LEASE, wait=10.0))
        await asyncio.sleep(0.1)
        record = make_record(queue="qb")
        await second.push(record)
        got = await asyncio.wait_for(waiting, 15.0)
        assert got is not None and got.id == record.id

    async def test_reserve_wait_wakes_for_a_large_batch(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        # Drivers often store big batches another way (COPY, one script, one journal line):
        # that path must wake waiting workers too.
        waiting = asyncio.create_task(driver.reserve(["default"], lease=LEASE, wait=10.0))
        await asyncio.sleep(0.1)
        records = [make_record(i) for i in range(50)]
        await second.push_many(records)
        got = await asyncio.wait_for(waiting, 15.0)
        assert got is not None and got.id == records[0].id

    async def test_reserve_wait_picks_up_a_delayed_job_when_due(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.DELAY)
        record = make_record(available_at=now() + SHORT)
        await driver.push(record)
        got = await driver.reserve(None, lease=LEASE, wait=10.0)
        assert got is not None and got.id == record.id

    # -- leases --------------------------------------------------------------------------

    async def test_complete_deletes_and_is_fenced(self, driver: QueueDriver) -> None:
        await driver.push(make_record())
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.complete(got) is True
        assert await driver.complete(got) is False, "a second complete has no lease to act on"
        assert await driver.reserve(None, lease=LEASE) is None
        stats = await driver.stats(["default"])
        assert stats["default"] == {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0}

    async def test_expired_lease_is_reclaimed_and_old_holder_fenced_off(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        await driver.push(make_record())
        old = await driver.reserve(None, lease=SHORT)
        assert old is not None and old.attempts == 1
        assert await second.reserve(None, lease=LEASE) is None
        await asyncio.sleep(SHORT + 0.2)
        new = await second.reserve(None, lease=LEASE)
        assert new is not None and new.id == old.id
        assert new.attempts == 2, "a reclaimed job counts the attempt its dead worker used"
        assert new.lease_token != old.lease_token
        # The old holder lost its lease: none of its calls may touch the live job.
        assert await driver.extend(old, lease=LEASE) is False
        assert await driver.complete(old) is False
        assert await driver.release(old, delay=0) is False
        assert await driver.fail(old, "late") is False
        assert (await second.stats(["default"]))["default"]["reserved"] == 1
        assert await second.complete(new) is True

    async def test_a_reclaimed_job_keeps_its_place(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        first = make_record(1)
        await driver.push(first)
        assert await driver.reserve(None, lease=SHORT) is not None
        newer = make_record(2)
        await driver.push(newer)
        await asyncio.sleep(SHORT + 0.2)
        got = await second.reserve(None, lease=LEASE)
        assert got is not None and got.id == first.id, "older work is not sent to the back"

    async def test_a_released_high_priority_job_still_goes_first_once_due(
        self, driver: QueueDriver
    ) -> None:
        _needs(driver, Capability.PRIORITY)
        _needs(driver, Capability.DELAY)
        high = make_record(1, priority=5)
        await driver.push(high)
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.release(got, delay=SHORT)
        low = make_record(2, priority=0)
        await driver.push(low)
        await asyncio.sleep(SHORT + 0.1)
        again = await driver.reserve(None, lease=LEASE)
        assert again is not None and again.id == high.id

    async def test_complete_after_expiry_succeeds_while_nobody_took_over(
        self, driver: QueueDriver
    ) -> None:
        # The fence is the token, not the clock: a slow worker whose lease ran out may still
        # settle the job as long as no other worker has reserved it since.
        await driver.push(make_record())
        got = await driver.reserve(None, lease=SHORT)
        assert got is not None
        await asyncio.sleep(SHORT + 0.2)
        assert await driver.complete(got) is True
        assert await driver.reserve(None, lease=LEASE) is None

    async def test_extend_keeps_the_lease(self, driver: QueueDriver, second: QueueDriver) -> None:
        await driver.push(make_record())
        got = await driver.reserve(None, lease=SHORT)
        assert got is not None
        assert await driver.extend(got, lease=LEASE) is True
        await asyncio.sleep(SHORT + 0.2)
        assert await second.reserve(None, lease=LEASE) is None
        assert await driver.complete(got) is True

    async def test_a_forged_token_is_refused(self, driver: QueueDriver) -> None:
        await driver.push(make_record())
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        forged = got.copy()
        forged.lease_token = "not-the-token"
        assert await driver.complete(forged) is False
        assert await driver.fail(forged, "x") is False
        assert await driver.complete(got) is True

    async def test_release_with_delay_and_error(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.DELAY)
        await driver.push(make_record())
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.release(got, delay=SHORT, error="boom") is True
        assert await driver.reserve(None, lease=LEASE) is None
        await asyncio.sleep(SHORT + 0.1)
        again = await driver.reserve(None, lease=LEASE)
        assert again is not None and again.id == got.id
        assert again.attempts == 2
        assert again.last_error == "boom"

    async def test_release_stores_attempts_as_given(self, driver: QueueDriver) -> None:
        await driver.push(make_record())
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        got.attempts -= 1  # what the worker does when it hands back an interrupted job
        assert await driver.release(got) is True
        again = await driver.reserve(None, lease=LEASE)
        assert again is not None and again.attempts == 1

    # -- failed store --------------------------------------------------------------------

    async def test_fail_moves_the_job_to_the_failed_store(self, driver: QueueDriver) -> None:
        pushed = make_record(5, queue="fq")
        await driver.push(pushed)
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.fail(got, "RuntimeError: nope") is True
        assert await driver.reserve(None, lease=LEASE) is None
        failed = await driver.failed()
        assert [r.id for r in failed] == [pushed.id]
        assert failed[0].last_error == "RuntimeError: nope"
        assert failed[0].failed_at is not None and failed[0].failed_at <= now() + 1
        assert failed[0].payload == {"n": 5} and failed[0].queue == "fq"
        assert (await driver.stats(["fq"]))["fq"]["failed"] == 1

    async def _fail_n(self, driver: QueueDriver, queues: list[str]) -> list[JobRecord]:
        out = []
        for i, queue in enumerate(queues):
            await driver.push(make_record(i, queue=queue))
            got = await driver.reserve([queue], lease=LEASE)
            assert got is not None
            assert await driver.fail(got, f"error {i}")
            out.append(got)
        return out

    async def test_failed_filters_by_queue_and_limit(self, driver: QueueDriver) -> None:
        records = await self._fail_n(driver, ["a", "b", "a", "a"])
        assert [r.id for r in await driver.failed(queue="a")] == [records[i].id for i in (0, 2, 3)]
        assert len(await driver.failed(limit=2)) == 2
        assert [r.id for r in await driver.failed(queue="b")] == [records[1].id]

    async def test_retry_failed_requeues_with_attempts_reset(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        records = await self._fail_n(driver, ["default", "default", "default"])
        assert await second.retry_failed([records[1].id, "no-such-id"]) == 1
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and got.id == records[1].id
        assert got.attempts == 1 and got.failed_at is None
        assert await driver.complete(got)
        assert await second.retry_failed() == 2
        assert await driver.failed() == []
        assert sorted(await _drain_ids(driver)) == sorted([records[0].id, records[2].id])

    async def test_forget_failed(self, driver: QueueDriver, second: QueueDriver) -> None:
        records = await self._fail_n(driver, ["default", "default", "other"])
        assert await second.forget_failed([records[0].id]) == 1
        assert [r.id for r in await driver.failed()] == [records[1].id, records[2].id]
        assert await second.forget_failed() == 2
        assert await driver.failed() == []
        assert await driver.retry_failed() == 0

    # -- managing and counting -----------------------------------------------------------

    async def test_purge_deletes_pending_and_delayed_of_one_queue(
        self, driver: QueueDriver
    ) -> None:
        for i in range(3):
            await driver.push(make_record(i, queue="p"))
        delayed = make_record(9, queue="p", available_at=now() + 60)
        if Capability.DELAY in driver.capabilities:
            await driver.push(delayed)
        keep = make_record(4, queue="keep")
        await driver.push(keep)
        expected = 4 if Capability.DELAY in driver.capabilities else 3
        assert await driver.purge("p") == expected
        assert await driver.reserve(["p"], lease=LEASE) is None
        got = await driver.reserve(["keep"], lease=LEASE)
        assert got is not None and got.id == keep.id

    async def test_purge_leaves_reserved_jobs_alone(self, driver: QueueDriver) -> None:
        await driver.push(make_record(1))
        running = await driver.reserve(None, lease=LEASE)
        assert running is not None
        await driver.push(make_record(2))
        assert await driver.purge("default") == 1
        assert await driver.complete(running) is True

    async def test_stats_counts_every_state(self, driver: QueueDriver) -> None:
        for i in range(4):
            await driver.push(make_record(i, queue="s"))
        if Capability.DELAY in driver.capabilities:
            await driver.push(make_record(9, queue="s", available_at=now() + 60))
        reserved = await driver.reserve(["s"], lease=LEASE)
        failing = await driver.reserve(["s"], lease=LEASE)
        assert reserved is not None and failing is not None
        await driver.fail(failing, "x")
        stats = await driver.stats(["s", "empty"])
        delayed = 1 if Capability.DELAY in driver.capabilities else 0
        assert stats["s"] == {"pending": 2, "delayed": delayed, "reserved": 1, "failed": 1}
        assert stats["empty"] == {"pending": 0, "delayed": 0, "reserved": 0, "failed": 0}
        assert "s" in await driver.stats()

    async def test_stats_count_a_lease_that_ran_out_as_pending(self, driver: QueueDriver) -> None:
        # Nobody holds the job any more and the next reservation takes it back: for a health
        # check sizing workers, it is waiting work, whether or not anyone has reclaimed it yet.
        await driver.push(make_record(1, queue="x"))
        await driver.push(make_record(2, queue="x"))
        expiring = await driver.reserve(["x"], lease=SHORT)
        held = await driver.reserve(["x"], lease=LEASE)
        assert expiring is not None and held is not None
        await asyncio.sleep(SHORT + 0.1)
        assert (await driver.stats(["x"]))["x"] == {
            "pending": 1,
            "delayed": 0,
            "reserved": 1,
            "failed": 0,
        }

    # -- batches -------------------------------------------------------------------------

    async def test_push_many_stores_all_in_order(self, driver: QueueDriver) -> None:
        t = now()
        records = [make_record(i, created_at=t, available_at=t) for i in range(20)]
        await driver.push_many(records)
        assert await _drain_ids(driver) == [r.id for r in records]

    async def test_push_many_is_all_or_nothing(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.ATOMIC_BATCH)
        good = [make_record(i) for i in range(5)]
        if driver.keeps_instances:
            _needs(driver, Capability.UNIQUE)
            bad = make_record(99, unique_key="dup")
            batch = [*good[:2], bad, make_record(98, unique_key="dup"), *good[2:]]
        else:
            # A payload that cannot be encoded must fail the batch before anything is written.
            bad = make_record(99, payload={"n": object()})
            batch = [*good[:3], bad, *good[3:]]
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is stored
            await driver.push_many(batch)
        assert await driver.reserve(None, lease=LEASE) is None
        assert (await driver.stats(["default"]))["default"]["pending"] == 0

    async def test_a_batch_with_a_payload_that_is_not_json_stores_nothing(
        self, driver: QueueDriver
    ) -> None:
        # The manager refuses such payloads before a driver sees them; a driver handed one
        # directly (a custom dispatcher, a bug) must still store all of a batch or none of it,
        # even when the bad record comes after rows already on their way to the store.
        _needs(driver, Capability.PERSISTENT)
        batch = [make_record(n, payload={"n": n, "pad": "x" * 2000}) for n in range(49)]
        batch.append(make_record(49, payload={"n": 49, "bad": {1, 2}}))
        with pytest.raises(PayloadError, match=batch[-1].id):
            await driver.push_many(batch)
        assert (await driver.stats(["default"])).get("default", {}).get("pending", 0) == 0
        with pytest.raises(PayloadError, match=batch[-1].id):
            await driver.push(batch[-1])
        await driver.push_many(batch[:-1])
        assert (await driver.stats(["default"]))["default"]["pending"] == 49

    async def test_what_only_json_can_write_comes_back_as_json_reads_it(
        self, driver: QueueDriver
    ) -> None:
        # A custom to_json may return integer keys and integers beyond 64 bits: every store
        # hands back what JSON makes of them (string keys, the exact integer), the same whether
        # the job went alone or in a batch.
        _needs(driver, Capability.PERSISTENT)
        big = 2**70 + 1
        alone = make_record(1, payload={"n": 1, "by_id": {7: "x"}, "big": big}, meta={1: True})
        batched = make_record(2, payload={"n": 2, "by_id": {8: "y"}, "big": -big}, meta={2: 0})
        assert await driver.push(alone)
        await driver.push_many([batched])
        got = await driver.reserve_many(None, lease=LEASE, limit=2)
        assert [(r.payload, r.meta) for r in got] == [
            ({"n": 1, "by_id": {"7": "x"}, "big": big}, {"1": True}),
            ({"n": 2, "by_id": {"8": "y"}, "big": -big}, {"2": 0}),
        ]
        assert [type(r.payload["big"]) for r in got] == [int, int]

    async def test_push_many_with_a_pending_unique_key_is_all_or_nothing(
        self, driver: QueueDriver
    ) -> None:
        _needs(driver, Capability.ATOMIC_BATCH)
        _needs(driver, Capability.UNIQUE)
        assert await driver.push(make_record(0, unique_key="taken"))
        batch = [make_record(1), make_record(2, unique_key="taken"), make_record(3)]
        with pytest.raises(Exception):  # noqa: B017 - any error, as long as nothing is stored
            await driver.push_many(batch)
        assert (await driver.stats(["default"]))["default"]["pending"] == 1

    async def test_a_refused_batch_leaves_concurrent_pushes_stored(
        self, driver: QueueDriver
    ) -> None:
        _needs(driver, Capability.ATOMIC_BATCH)
        _needs(driver, Capability.UNIQUE)
        batch = [make_record(1, unique_key="twice"), make_record(2, unique_key="twice")]
        x, y = make_record(3), make_record(4)
        results = await asyncio.gather(
            driver.push_many(batch), driver.push(x), driver.push(y), return_exceptions=True
        )
        assert isinstance(results[0], Exception), "a batch repeating a unique key is refused"
        assert results[1:] == [True, True]
        ids = set(await _drain_ids(driver))
        assert ids == {x.id, y.id}

    async def test_retry_failed_keeps_a_job_whose_unique_key_is_pending_again(
        self, driver: QueueDriver
    ) -> None:
        _needs(driver, Capability.UNIQUE)
        await driver.push(make_record(1, unique_key="k"))
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and await driver.fail(got, "x")
        assert await driver.push(make_record(2, unique_key="k")) is True
        assert await driver.retry_failed() == 0, "retrying would duplicate the pending job"
        assert [r.id for r in await driver.failed()] == [got.id]

    async def test_reserve_many_and_complete_many(self, driver: QueueDriver) -> None:
        t = now()
        records = [make_record(i, created_at=t, available_at=t) for i in range(5)]
        await driver.push_many(records)
        first = await driver.reserve_many(None, lease=LEASE, limit=3)
        assert [r.id for r in first] == [r.id for r in records[:3]]
        assert all(r.attempts == 1 and r.lease_token for r in first)
        rest = await driver.reserve_many(None, lease=LEASE, limit=10)
        assert [r.id for r in rest] == [r.id for r in records[3:]]
        assert await driver.complete_many(first + rest) == [True] * 5
        assert await driver.complete_many(first) == [False] * 3
        assert await driver.reserve_many(None, lease=LEASE, limit=3) == []

    # -- complete_and_reserve ------------------------------------------------------------

    async def test_complete_and_reserve_completes_and_leases_the_next_jobs(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        t = now()
        records = [make_record(i, created_at=t, available_at=t) for i in range(4)]
        await driver.push_many(records)
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None and first.id == records[0].id
        before = now()
        completed, taken = await driver.complete_and_reserve(first, None, lease=LEASE, limit=2)
        assert completed is True
        assert [r.id for r in taken] == [r.id for r in records[1:3]], "limit and order hold"
        for record in taken:
            assert record.attempts == 1 and record.lease_token
            assert record.reserved_until is not None
            assert before + LEASE - 1 <= record.reserved_until <= now() + LEASE + 1, (
                "the lease starts when the job is reserved"
            )
        assert await driver.complete(first) is False, "the first job is gone"
        # The leases are real: another handle gets only the job nobody holds.
        rest = await second.reserve(None, lease=LEASE)
        assert rest is not None and rest.id == records[3].id
        assert await second.reserve(None, lease=LEASE) is None
        assert await driver.complete_many(taken) == [True, True]
        assert await second.complete(rest) is True

    async def test_complete_and_reserve_reports_a_lost_lease_like_complete(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        await driver.push(make_record(1))
        old = await driver.reserve(None, lease=SHORT)
        assert old is not None
        await asyncio.sleep(SHORT + 0.2)
        holder = await second.reserve(None, lease=LEASE)
        assert holder is not None and holder.id == old.id
        nxt = make_record(2)
        await driver.push(nxt)
        completed, taken = await driver.complete_and_reserve(old, None, lease=LEASE)
        assert completed is False, "the job another worker holds is not deleted"
        assert [r.id for r in taken] == [nxt.id], "the reservation happens either way"
        never = make_record(3)
        assert await driver.complete_and_reserve(never, None, lease=LEASE) == (False, [])
        assert await driver.complete(never) is False
        assert await second.complete(holder) is True
        assert await driver.complete(taken[0]) is True

    async def test_complete_and_reserve_takes_only_from_the_given_queues(
        self, driver: QueueDriver
    ) -> None:
        await driver.push(make_record(1, queue="a"))
        first = await driver.reserve(["a"], lease=LEASE)
        assert first is not None
        other = make_record(2, queue="b")
        await driver.push(other)
        assert await driver.complete_and_reserve(first, ["a"], lease=LEASE) == (True, [])
        late = make_record(3, queue="a")
        await driver.push(late)
        got = await driver.reserve(["a"], lease=LEASE)
        assert got is not None and got.id == late.id
        completed, taken = await driver.complete_and_reserve(got, ["c", "b"], lease=LEASE)
        assert completed is True and [r.id for r in taken] == [other.id]
        assert await driver.complete(taken[0]) is True

    async def test_complete_and_reserve_with_limit_zero_only_completes(
        self, driver: QueueDriver
    ) -> None:
        await driver.push_many([make_record(1), make_record(2)])
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        assert await driver.complete_and_reserve(first, None, lease=LEASE, limit=0) == (True, [])
        stats = (await driver.stats(["default"]))["default"]
        assert (stats["pending"], stats["reserved"]) == (1, 0)

    async def test_complete_and_reserve_completes_before_it_waits(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        await driver.push(make_record(1))
        first = await driver.reserve(None, lease=LEASE)
        assert first is not None
        nxt = make_record(2)

        async def check_then_push() -> None:
            await asyncio.sleep(SHORT / 2)
            stats = (await second.stats(["default"]))["default"]
            assert stats["reserved"] == 0, "the completion is stored while the call still waits"
            await second.push(nxt)

        pusher = asyncio.create_task(check_then_push())
        completed, taken = await driver.complete_and_reserve(
            first, None, lease=LEASE, wait=SHORT * 10
        )
        await pusher
        assert completed is True and [r.id for r in taken] == [nxt.id]
        assert await driver.complete(taken[0]) is True
        started = time.monotonic()
        again = await driver.push(make_record(3))
        assert again is True
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.complete_and_reserve(got, None, lease=LEASE, wait=SHORT) == (True, [])
        assert time.monotonic() - started >= SHORT - 0.05, "it waited for work"

    async def test_unique_key_refuses_a_pending_duplicate(self, driver: QueueDriver) -> None:
        _needs(driver, Capability.UNIQUE)
        assert await driver.push(make_record(1, unique_key="user-1")) is True
        assert await driver.push(make_record(2, unique_key="user-1")) is False
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None
        assert await driver.push(make_record(3, unique_key="user-1")) is False, "still running"
        assert await driver.complete(got)
        assert await driver.push(make_record(4, unique_key="user-1")) is True

    # -- concurrency ---------------------------------------------------------------------

    async def test_concurrent_reservers_never_share_a_job(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        records = [make_record(i) for i in range(60)]
        await driver.push_many(records)
        taken: list[str] = []

        async def reserver(handle: QueueDriver) -> None:
            for _ in range(200):
                got = await handle.reserve(None, lease=LEASE)
                if got is None:
                    return
                taken.append(got.id)
                await asyncio.sleep(0)
                assert await handle.complete(got)

        await asyncio.gather(*(reserver(h) for h in [driver, second] * 4))
        assert sorted(taken) == sorted(r.id for r in records)

    # -- persistence ---------------------------------------------------------------------

    async def test_another_handle_sees_the_same_store(
        self, driver: QueueDriver, second: QueueDriver
    ) -> None:
        _needs(driver, Capability.PERSISTENT)
        await self._fail_n(driver, ["default"])
        kept = make_record(1)
        await driver.push(kept)
        got = await second.reserve(None, lease=LEASE)
        assert got is not None and got.id == kept.id
        assert len(await second.failed()) == 1
        # A lease taken through one handle is settled through another: workers share a store.
        assert await driver.complete(got) is True

    # -- end to end through QueueManager -------------------------------------------------

    async def test_manager_dispatch_process_round_trip(self, driver: QueueDriver) -> None:
        ContractJob.ran.clear()
        manager = QueueManager(driver=driver)
        job_id = await manager.dispatch(ContractJob(n=42))
        assert isinstance(job_id, str)
        assert await manager.process() is True
        assert ContractJob.ran == [42]
        assert await manager.process() is False
        assert manager.get_metrics()["total_completed"] == 1

    async def test_unknown_job_type_goes_to_failed_store(self, driver: QueueDriver) -> None:
        if driver.keeps_instances:
            pytest.skip("in-process drivers run the dispatched object, never a stored name")
        record = make_record(1, job_name="no.such.Job")
        await driver.push(record)
        manager = QueueManager(driver=driver)
        assert await manager.process() is True
        failed = await manager.failed_jobs()
        assert [r.id for r in failed] == [record.id]
        assert "unknown job type 'no.such.Job'" in (failed[0].last_error or "")
        assert failed[0].attempts == 1, "an unknown type is not retried"

    async def test_invalid_payload_goes_to_failed_store(self, driver: QueueDriver) -> None:
        if driver.keeps_instances:
            pytest.skip("in-process drivers run the dispatched object, never a stored payload")
        record = make_record(payload={"n": "not a number"})
        await driver.push(record)
        manager = QueueManager(driver=driver)
        assert await manager.process() is True
        failed = await manager.failed_jobs()
        assert [r.id for r in failed] == [record.id]
        assert "fails validation" in (failed[0].last_error or "")
        assert failed[0].payload == {"n": "not a number"}, "the bad payload is kept for a human"

    async def test_retries_then_fails_for_good(self, driver: QueueDriver) -> None:
        manager = QueueManager(driver=driver)
        await manager.dispatch(AlwaysFails())
        assert await manager.process() is True  # attempt 1: retried (max_retries = 1)
        assert await manager.failed_jobs() == []
        assert await manager.process() is True  # attempt 2: fails for good
        failed = await manager.failed_jobs()
        assert len(failed) == 1 and failed[0].attempts == 2
        assert "failure requested" in (failed[0].last_error or "")
        metrics = manager.get_metrics()
        assert (metrics["total_retried"], metrics["total_failed"]) == (1, 1)
