"""The file driver: the contract, restarts, torn and damaged files, rotation, many processes."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from queuekit import QueueManager
from queuekit.clock import now
from queuekit.drivers import file_tail
from queuekit.drivers.file import FileDriver
from queuekit.errors import ConfigError, DriverError, DuplicateJobError
from queuekit.record import JobRecord
from queuekit.testing import ContractJob, DriverContract, make_record
from queuekit.testing.multiprocess import drain_in_processes, kill_mid_job


def file_options(path: Path, **extra: Any) -> dict[str, Any]:
    """Options of a file queue at ``path`` (a short poll keeps cross-process tests quick)."""
    return {"path": str(path), "poll_interval": 0.02, "max_poll_interval": 0.1, **extra}


class TestFileDriver(DriverContract):
    # Both durability settings: the fsync policy changes when each call answers.
    @pytest.fixture(params=[True, False], ids=["fsync", "no-fsync"])
    def options(self, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
        return file_options(tmp_path / "jobs.json", fsync=request.param)

    @pytest.fixture
    async def driver(self, options: dict[str, Any]) -> AsyncIterator[FileDriver]:
        d = FileDriver(options)
        await d.connect()
        yield d
        await d.close()

    @pytest.fixture
    def open_driver(self, options: dict[str, Any]) -> Callable[[], Awaitable[FileDriver]]:
        async def _open() -> FileDriver:
            d = FileDriver(options)
            await d.connect()
            return d

        return _open


# -- helpers -----------------------------------------------------------------------------------

LEASE = 30.0


async def open_file_driver(path: Path, **extra: Any) -> FileDriver:
    d = FileDriver(file_options(path, **extra))
    await d.connect()
    return d


async def drain(driver: FileDriver) -> list[str]:
    ids = []
    for _ in range(10_000):
        record = await driver.reserve(None, lease=LEASE)
        if record is None:
            return ids
        ids.append(record.id)
        assert await driver.complete(record)
    raise AssertionError("did not drain")


def matching(folder: Path, pattern: str) -> list[Path]:
    return sorted(folder.glob(pattern))


def written(journal: Path) -> bytes:
    """The journal's lines: its bytes up to the preallocated zeros."""
    return journal.read_bytes().split(b"\0", 1)[0]


def journal_lines(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in written(path.with_name(path.name + ".journal")).splitlines()
    ]


def write_at_end(journal: Path, data: bytes) -> None:
    """Write ``data`` where the next line would go, as a writer that crashed mid-write would."""
    fd = os.open(journal, os.O_WRONLY)
    try:
        os.pwrite(fd, data, len(written(journal)))
    finally:
        os.close(fd)


# -- config --------------------------------------------------------------------------------------


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"queue\.file\.max_backups"):
        FileDriver({"max_backups": -1})
    with pytest.raises(ConfigError, match=r"queue\.file\.colour"):
        FileDriver({"colour": "blue"})


def test_retry_after_sets_the_default_lease(tmp_path: Path) -> None:
    assert FileDriver(file_options(tmp_path / "q.json", retry_after=7)).default_lease == 7.0


async def test_manager_picks_the_driver_by_config(tmp_path: Path) -> None:
    ContractJob.ran.clear()
    config = {"queue": {"driver": "file", "file": file_options(tmp_path / "jobs.json")}}
    async with QueueManager(config) as manager:
        assert isinstance(manager.driver, FileDriver)
        await manager.dispatch(ContractJob(n=5))
    async with QueueManager(config) as manager:
        assert await manager.process() is True
    assert ContractJob.ran == [5]


async def test_a_batch_with_a_pending_unique_key_stores_nothing(tmp_path: Path) -> None:
    driver = await open_file_driver(tmp_path / "jobs.json")
    try:
        await driver.push(make_record(1, unique_key="report-7"))
        batch = [make_record(2), make_record(3, unique_key="report-7"), make_record(4)]
        with pytest.raises(DuplicateJobError, match="report-7"):
            await driver.push_many(batch)
        assert (await driver.stats())["default"]["pending"] == 1
    finally:
        await driver.close()


# -- restart and on-disk format ----------------------------------------------------------------


async def test_restart_keeps_pending_delayed_reserved_and_failed_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    first = await open_file_driver(path)
    pending = [make_record(i, priority=i) for i in range(3)]
    for record in pending:
        await first.push(record)
    delayed = make_record(10, available_at=now() + 3600)
    await first.push(delayed)
    await first.push(make_record(11, queue="running"))
    running = await first.reserve(["running"], lease=LEASE)
    await first.push(make_record(12, queue="broken"))
    broken = await first.reserve(["broken"], lease=LEASE)
    assert running is not None and broken is not None
    assert await first.fail(broken, "RuntimeError: boom")
    before = await first.stats()
    await first.close()

    again = await open_file_driver(path)
    try:
        assert await again.stats() == before
        assert (await again.failed())[0].last_error == "RuntimeError: boom"
        # The lease survives the restart: its holder can still settle the job.
        assert await again.complete(running) is True
        assert await drain(again) == [r.id for r in reversed(pending)]
    finally:
        await again.close()


async def test_snapshot_is_readable_json_and_journal_one_line_per_operation(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    try:
        await driver.push(make_record(1))
        await driver.push_many([make_record(i) for i in range(2, 6)])
        ops = [line["op"] for line in journal_lines(path)]
        assert ops == ["begin", "push", "push"], "a batch is one line: written whole or not"
        await driver.compact()
        snapshot = json.loads(path.read_text())
        assert [job["payload"]["n"] for job in snapshot["jobs"]] == [1, 2, 3, 4, 5]
        assert snapshot["failed"] == [] and snapshot["generation"] == 1
        assert [line["op"] for line in journal_lines(path)] == ["begin"]
    finally:
        await driver.close()


# -- damaged files -----------------------------------------------------------------------------


async def test_torn_last_journal_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    records = [make_record(i) for i in range(3)]
    for record in records:
        await driver.push(record)
    await driver.close()
    journal = path.with_name("jobs.json.journal")
    size = journal.stat().st_size
    write_at_end(journal, b'{"op":"push","jobs":[{"v":1,"id":"half-writ')  # a crash mid-write

    with caplog.at_level(logging.WARNING, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path)
    try:
        assert any("torn last line" in r.getMessage() for r in caplog.records)
        assert driver.problems == [], "a torn tail was never acknowledged: not a problem"
        assert written(journal).endswith(b"\n"), "the torn bytes are cut off"
        assert journal.stat().st_size == size, "zeroed, not truncated: the room stays"
        await driver.push(extra := make_record(9))
        assert await drain(driver) == [r.id for r in [*records, extra]]
    finally:
        await driver.close()


async def test_torn_line_written_by_a_dead_process_is_cut_before_the_next_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    other = await open_file_driver(path)
    try:
        await driver.push(first := make_record(1))
        write_at_end(path.with_name("jobs.json.journal"), b'{"op":"push","jo')
        with caplog.at_level(logging.WARNING, logger="queuekit.drivers.file"):
            await other.push(second := make_record(2))
        assert any("torn last line" in r.getMessage() for r in caplog.records)
        assert await drain(driver) == [first.id, second.id]
    finally:
        await other.close()
        await driver.close()


async def _three_generations(path: Path) -> list[JobRecord]:
    """Jobs spread over snapshot generations 0..2 and their journals (with backups)."""
    driver = await open_file_driver(path, max_backups=3)
    records = []
    for n in range(3):
        record = make_record(n)
        records.append(record)
        await driver.push(record)
        if n < 2:
            await driver.compact()
    await driver.close()
    return records


@pytest.mark.parametrize("damaged", [1, 2])
async def test_garbage_snapshot_falls_back_to_a_backup_plus_journals_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damaged: int
) -> None:
    path = tmp_path / "jobs.json"
    records = await _three_generations(path)
    garbage = b"\x00\x17 not json at all {"
    targets = [path, path.with_name("jobs.json.1")][:damaged]
    for target in targets:
        target.write_bytes(garbage)

    with caplog.at_level(logging.ERROR, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path, max_backups=3)
    try:
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert any(str(path) in m and "not valid JSON" in m for m in errors), errors
        assert any("recovered" in m for m in errors)
        assert len(driver.problems) >= damaged
        snapshot = json.loads(path.read_text())
        assert [job["id"] for job in snapshot["jobs"]] == [r.id for r in records], (
            "a fresh snapshot of what was recovered replaced the damaged one"
        )
        # Every job is back: the backup holds the older ones, the kept journals the rest.
        assert await drain(driver) == [r.id for r in records]
    finally:
        await driver.close()
    for target in targets:
        kept = matching(tmp_path, f"{target.name}.damaged-*")
        assert [k.read_bytes() for k in kept] == [garbage], "the damaged file is kept untouched"


async def test_damaged_record_in_snapshot_is_skipped_and_the_rest_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    records = [make_record(i) for i in range(3)]
    await driver.push_many(records)
    await driver.compact()
    await driver.close()
    snapshot = json.loads(path.read_text())
    snapshot["jobs"][1]["attempts"] = "many"
    path.write_text(json.dumps(snapshot))

    with caplog.at_level(logging.ERROR, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path)
    try:
        assert any("jobs[1]" in m and "'attempts'" in m for m in driver.problems)
        assert await drain(driver) == [records[0].id, records[2].id]
        assert len(matching(tmp_path, "jobs.json.damaged-*")) == 1
    finally:
        await driver.close()


async def test_damaged_journal_line_in_the_middle_is_skipped_and_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    await driver.push(first := make_record(1))
    journal = path.with_name("jobs.json.journal")
    write_at_end(journal, b"this line is garbage\n")
    await driver.push(second := make_record(2))
    await driver.close()

    with caplog.at_level(logging.ERROR, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path)
    try:
        assert any(
            str(journal) in m and "damaged journal line" in m and "garbage" in m
            for m in driver.problems
        )
        assert await drain(driver) == [first.id, second.id]
        kept = matching(tmp_path, "jobs.json.journal.damaged-*")
        assert len(kept) == 1 and b"this line is garbage" in kept[0].read_bytes()
    finally:
        await driver.close()


async def test_a_journal_older_than_its_snapshot_is_not_applied_twice(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    await driver.push(make_record(1))
    first = await driver.reserve(None, lease=0.2)
    assert first is not None and first.attempts == 1
    await driver.compact()
    await driver.close()
    # A crash between compaction's two renames: the new snapshot is in place, the journal
    # is still the one it already contains.
    journal = path.with_name("jobs.json.journal")
    journal.write_bytes(path.with_name("jobs.json.journal.1").read_bytes())

    with caplog.at_level(logging.WARNING, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path)
    try:
        assert driver.problems == [] and caplog.records == []
        await asyncio.sleep(0.3)
        again = await driver.reserve(None, lease=LEASE)
        assert again is not None and again.id == first.id
        assert again.attempts == 2, "the reservation in the old journal counted once"
    finally:
        await driver.close()


# -- the I/O thread ----------------------------------------------------------------------------


def _descriptors_of(paths: tuple[str, ...]) -> set[str]:
    """This process's open descriptors that are wake-up descriptors or files under ``paths``."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "eventfd" in target or target.startswith("pipe:") or target.startswith(paths):
            found.add(f"{fd} -> {target}")
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_answers_reach_every_calling_loop_and_close_releases_every_descriptor(
    tmp_path: Path,
) -> None:
    before = _descriptors_of((str(tmp_path),))
    driver = await open_file_driver(tmp_path / "jobs.json")
    elsewhere = [make_record(i) for i in range(20)]

    def push_from_another_loop() -> None:
        async def push_all() -> None:
            for record in elsewhere:
                assert await driver.push(record)

        asyncio.run(push_all())  # this loop is closed before the driver is

    here = [make_record(100 + i) for i in range(20)]
    await asyncio.gather(asyncio.to_thread(push_from_another_loop), *(driver.push(r) for r in here))
    assert (await driver.stats())["default"]["pending"] == 40
    assert sorted(await drain(driver)) == sorted(r.id for r in [*elsewhere, *here])
    await driver.close()
    assert _descriptors_of((str(tmp_path),)) <= before, "a descriptor was left open"


async def test_a_driver_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    driver = await open_file_driver(tmp_path / "jobs.json")
    await driver.push(make_record(1))
    name = f"queuekit-file {driver.path}"
    del driver
    gc.collect()
    for _ in range(200):
        if not any(t.name == name for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)
    assert not any(t.name == name for t in threading.enumerate()), "the I/O thread still runs"
    reopened = await open_file_driver(tmp_path / "jobs.json")
    try:
        assert (await reopened.stats())["default"]["pending"] == 1
    finally:
        await reopened.close()


def _report_of_child(pid: int, read_end: int) -> str:
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
async def test_a_driver_connected_before_fork_refuses_to_work_in_the_child(
    tmp_path: Path,
) -> None:
    driver = await open_file_driver(tmp_path / "jobs.json")
    try:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report what the call raised, then leave at once
            try:
                asyncio.run(driver.push(make_record(1)))
                message = b"no error"
            except DriverError as e:
                message = str(e).encode()
            except BaseException as e:  # pragma: no cover - reported to the parent
                message = repr(e).encode()
            os.write(write_end, message)
            os._exit(0)
        os.close(write_end)
        message = await asyncio.to_thread(_report_of_child, pid, read_end)
        assert "connect a driver in each process" in message, message
        assert (await driver.stats()) == {}, "the child stored nothing"
    finally:
        await driver.close()


# -- durability ------------------------------------------------------------------------------


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the journal fsyncs (one entry per call)."""
    calls: list[int] = []
    real = file_tail.datasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(file_tail, "datasync", counting)
    return calls


async def test_fsync_policy(tmp_path: Path, fsyncs: list[int]) -> None:
    synced = await open_file_driver(tmp_path / "a.json", fsync=True)
    unsynced = await open_file_driver(tmp_path / "b.json", fsync=False)
    try:
        await unsynced.push(make_record(1))
        got = await unsynced.reserve(None, lease=LEASE)
        assert got is not None and await unsynced.complete(got)
        assert fsyncs == []

        await synced.push(make_record(1))
        assert len(fsyncs) == 1, "an acknowledged push is on disk"
        got = await synced.reserve(None, lease=LEASE)
        assert got is not None and await synced.extend(got, lease=LEASE)
        assert len(fsyncs) == 1, "a lost lease only makes the job run again: not synced"
        assert await synced.complete(got)
        assert len(fsyncs) == 2
    finally:
        await unsynced.close()
        await synced.close()


async def test_complete_and_reserve_is_one_append_and_one_fsync(
    tmp_path: Path, fsyncs: list[int]
) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path, fsync=True)
    try:
        await driver.push_many([first := make_record(1), second := make_record(2)])
        got = await driver.reserve(None, lease=LEASE)
        assert got is not None and got.id == first.id
        before = len(fsyncs)
        appends: list[bytes] = []
        append = driver._store.append

        def counting(data: bytes) -> None:
            appends.append(data)
            append(data)

        driver._store.append = counting  # type: ignore[method-assign]
        completed, taken = await driver.complete_and_reserve(got, None, lease=LEASE)
        assert completed and [r.id for r in taken] == [second.id]
        assert len(appends) == 1, "both lines in one append, under one lock"
        assert len(fsyncs) == before + 1, "the completion is synced, the reservation rides along"
        assert [line["op"] for line in journal_lines(path)][-2:] == ["complete", "reserve"]
    finally:
        await driver.close()


async def test_concurrent_operations_share_one_fsync(tmp_path: Path, fsyncs: list[int]) -> None:
    driver = await open_file_driver(tmp_path / "jobs.json", fsync=True)
    try:
        records = [make_record(i) for i in range(100)]
        await asyncio.gather(*(driver.push(r) for r in records))
        assert 1 <= len(fsyncs) < len(records) // 2, "group commit: one fsync per batch"
        assert await drain(driver) == [r.id for r in records]
    finally:
        await driver.close()


# -- compaction and rotation -------------------------------------------------------------------


async def test_rotation_keeps_max_backups(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path, max_file_size=2048, max_backups=2)
    try:
        for i in range(40):
            await driver.push(make_record(i, payload={"n": i, "pad": "x" * 200}))
            got = await driver.reserve(None, lease=LEASE)
            assert got is not None and await driver.complete(got)
        await driver.push(kept := make_record(99))
        names = [p.name for p in matching(tmp_path, "*")]
        assert {"jobs.json.1", "jobs.json.2", "jobs.json.journal.1", "jobs.json.journal.2"} <= set(
            names
        )
        assert "jobs.json.3" not in names and "jobs.json.journal.3" not in names
        generations = [
            json.loads((tmp_path / n).read_text())["generation"]
            for n in ("jobs.json", "jobs.json.1", "jobs.json.2")
        ]
        assert generations[0] > generations[1] > generations[2] > 0
        assert len(written(path.with_name("jobs.json.journal"))) < 2048 + 1024
        for k in (1, 2):
            archived = tmp_path / f"jobs.json.journal.{k}"
            assert archived.read_bytes() == written(archived), "archived without its room"
        assert await drain(driver) == [kept.id]
    finally:
        await driver.close()


async def test_compaction_keeps_every_job_in_every_state(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path, max_file_size=4096)
    other = await open_file_driver(path, max_file_size=4096)
    try:
        records = [make_record(i, payload={"n": i, "pad": "y" * 100}) for i in range(200)]
        for record in records[:100]:
            await driver.push(record)
        await other.push_many(records[100:])
        leased = [await driver.reserve(None, lease=LEASE) for _ in range(30)]
        for record in leased[:10]:
            assert record is not None and await driver.complete(record)
        for record in leased[10:20]:
            assert record is not None and await other.fail(record, "failed on purpose")
        for record in leased[20:]:
            assert record is not None and await driver.release(record, delay=3600)
        generation = json.loads(path.read_text())["generation"]
        assert generation >= 2, "the journal was compacted more than once"
        expected = {"pending": 170, "delayed": 10, "reserved": 0, "failed": 10}
        assert (await driver.stats())["default"] == expected
        assert (await other.stats())["default"] == expected, "the other handle followed"
        reopened = await open_file_driver(path)
        try:
            assert (await reopened.stats())["default"] == expected
            assert await drain(reopened) == [r.id for r in records[30:]]
        finally:
            await reopened.close()
    finally:
        await other.close()
        await driver.close()


async def test_a_handle_behind_by_two_compactions_reloads(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    other = await open_file_driver(path)
    try:
        await driver.push(a := make_record(1))
        await driver.compact()
        await driver.push(b := make_record(2))
        await driver.compact()
        assert await drain(other) == [a.id, b.id]
    finally:
        await other.close()
        await driver.close()


# -- the preallocated journal -------------------------------------------------------------------


async def test_lines_overwrite_preallocated_room_so_the_size_stays(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    journal = path.with_name("jobs.json.journal")
    driver = await open_file_driver(path, fsync=True)
    try:
        assert journal_lines(path)[0]["format"] == "queuekit.file.journal/2"
        size = journal.stat().st_size
        assert size > len(written(journal)), "room beyond the header"
        await driver.push_many([make_record(i) for i in range(20)])
        for i in range(20):
            await driver.push(make_record(100 + i))
        assert journal.stat().st_size == size, "an fdatasync of these writes commits no size"
        assert len(journal_lines(path)) == 22
        assert set(journal.read_bytes()[len(written(journal)) :]) == {0}
    finally:
        await driver.close()


async def test_compaction_waits_for_the_written_length_not_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path, max_file_size=1024)
    try:
        await driver.push(make_record(0))
        assert path.with_name("jobs.json.journal").stat().st_size > 1024
        assert json.loads(path.read_text())["generation"] == 0, "room is not journal"
        for i in range(1, 10):
            await driver.push(make_record(i, payload={"n": i, "pad": "z" * 200}))
        assert json.loads(path.read_text())["generation"] >= 1
        assert len(written(tmp_path / "jobs.json.journal.1")) >= 1024
        assert (await driver.stats())["default"]["pending"] == 10
    finally:
        await driver.close()


async def test_a_format_1_journal_is_read_and_followed_until_compaction(tmp_path: Path) -> None:
    path = tmp_path / "jobs.json"
    journal = path.with_name("jobs.json.journal")
    driver = await open_file_driver(path)
    records = [make_record(1), make_record(2)]
    for record in records:
        await driver.push(record)
    await driver.close()
    # What an earlier version wrote: the same lines, a format 1 header, no room.
    legacy = written(journal).replace(b"queuekit.file.journal/2", b"queuekit.file.journal/1")
    journal.write_bytes(legacy)

    driver = await open_file_driver(path)
    other = await open_file_driver(path)
    try:
        assert driver.problems == []
        await driver.push(third := make_record(3))
        records.append(third)
        assert journal.read_bytes() == written(journal), "a format 1 journal gets no room"
        assert journal_lines(path)[0]["format"] == "queuekit.file.journal/1"
        assert (await other.stats())["default"]["pending"] == 3, "the other handle followed"
        await other.compact()
        assert journal_lines(path)[0]["format"] == "queuekit.file.journal/2"
        assert journal.stat().st_size > len(written(journal))
        await driver.push(fourth := make_record(4))
        records.append(fourth)
        assert await drain(other) == [r.id for r in records]
    finally:
        await other.close()
        await driver.close()


async def test_bytes_past_the_zeros_after_a_power_cut_are_cleared(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.json"
    journal = path.with_name("jobs.json.journal")
    driver = await open_file_driver(path)
    await driver.push(first := make_record(1))
    await driver.close()
    # A later block of an unacknowledged write reached the disk, an earlier one did not.
    end = len(written(journal))
    fd = os.open(journal, os.O_WRONLY)
    os.pwrite(fd, b'ob","queue":"default"}]}\n{"op":"purge","queue":"default"}\n', end + 700)
    os.close(fd)

    with caplog.at_level(logging.WARNING, logger="queuekit.drivers.file"):
        driver = await open_file_driver(path)
    try:
        assert any("cleared bytes past the end" in r.getMessage() for r in caplog.records)
        assert driver.problems == []
        assert set(journal.read_bytes()[end:]) == {0}
        await driver.push(second := make_record(2))
        reopened = await open_file_driver(path)
        try:
            assert reopened.problems == []
            assert await drain(reopened) == [first.id, second.id]
        finally:
            await reopened.close()
    finally:
        await driver.close()


async def test_a_journal_replaced_by_another_process_recovering_is_never_appended_to(
    tmp_path: Path,
) -> None:
    # Recovery replaces the journal without trimming it: the room left in the old one must not
    # take this handle's next line (it would be lost at the next restart).
    path = tmp_path / "jobs.json"
    driver = await open_file_driver(path)
    try:
        await driver.push(first := make_record(1))
        path.write_bytes(b"not a snapshot")
        other = await open_file_driver(path)
        try:
            assert other.problems, "the other handle recovered"
            await driver.push(second := make_record(2))
            assert (await other.stats())["default"]["pending"] == 2, "the line reached it"
        finally:
            await other.close()
    finally:
        await driver.close()
    reopened = await open_file_driver(path)
    try:
        assert await drain(reopened) == [first.id, second.id]
    finally:
        await reopened.close()


_CHILD = """
import asyncio, os, signal, sys
from queuekit.drivers import file_tail
from queuekit.drivers.file import FileDriver
from queuekit.testing import make_record

async def main(path, kill):
    driver = FileDriver({"path": path})
    await driver.connect()
    assert (await driver.stats())["default"]["pending"] == 1
    await driver.push(make_record(2))
    print("acknowledged", flush=True)
    if kill:
        real = os.pwrite

        def half_then_die(fd, data, offset):
            if bytes(data[:12]) == b'{"op":"push"':
                real(fd, bytes(data[: len(data) // 2]), offset)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(fd, data, offset)

        file_tail.os.pwrite = half_then_die
        await driver.push(make_record(3))
    await driver.close()

asyncio.run(main(sys.argv[1], sys.argv[2] == "kill"))
"""


def _run_child(path: Path, mode: str) -> subprocess.CompletedProcess[str]:
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["clean", "kill"])
async def test_another_process_reopens_the_room_and_a_kill_mid_append_loses_nothing_acked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    path = tmp_path / "jobs.json"
    journal = path.with_name("jobs.json.journal")
    driver = await open_file_driver(path, fsync=True)
    try:
        await driver.push(first := make_record(1))
        size = journal.stat().st_size
        assert size > len(written(journal))
        child = await asyncio.to_thread(_run_child, path, mode)
        assert "acknowledged" in child.stdout, child.stderr
        if mode == "kill":
            assert child.returncode == -signal.SIGKILL, child.stderr
            torn = written(journal).rsplit(b"\n", 1)[1]
            assert torn.startswith(b'{"op":"push"'), "the child died with half a line written"
        else:
            assert child.returncode == 0, child.stderr
        with caplog.at_level(logging.WARNING, logger="queuekit.drivers.file"):
            await driver.push(last := make_record(4))
        torn_warned = any("torn last line" in r.getMessage() for r in caplog.records)
        assert torn_warned == (mode == "kill")
        assert journal.stat().st_size == size, "the room was reused, the torn line zeroed"
        reopened = await open_file_driver(path)
        try:
            assert reopened.problems == []
            taken = [await reopened.reserve(None, lease=LEASE) for _ in range(4)]
            assert taken[-1] is None
            assert [r.payload["n"] for r in taken if r] == [1, 2, 4], "3 was never acknowledged"
            assert [taken[0].id, taken[2].id] == [first.id, last.id]  # type: ignore[union-attr]
        finally:
            await reopened.close()
    finally:
        await driver.close()


# -- many processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_three_processes_drain_3000_jobs(tmp_path: Path) -> None:
    config = {"queue": {"driver": "file", "file": file_options(tmp_path / "jobs.json")}}
    report = drain_in_processes(config, jobs=3000, processes=3, log_path=tmp_path / "probe.log")
    assert report.missing == []
    assert report.overlapping == []
    assert report.repeated == [], "no lease ran out, so no job may run twice"
    assert len(report.per_process) == 3, report.per_process


@pytest.mark.slow
def test_a_job_killed_mid_run_runs_again_after_its_lease(tmp_path: Path) -> None:
    options = file_options(tmp_path / "jobs.json", retry_after=2)
    report = kill_mid_job(
        {"queue": {"driver": "file", "file": options}}, log_path=tmp_path / "probe.log", lease=2
    )
    (runs,) = report.runs.values()
    assert [run[1] for run in runs] == [1, 2], "the second run counts the killed attempt"
    assert runs[0][3] is None and runs[1][3] is not None
    assert runs[1][0] != runs[0][0], "another process ran it"
