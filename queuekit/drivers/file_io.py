"""The file driver's I/O thread: every file operation runs there, never on an event loop.

Calls queue up while the thread works; it takes them all, holds the cross-process lock once,
catches up once, appends all their lines in one write and fsyncs once (group commit), then
answers each. A caller that awaits each call before the next pays one hand-off each way per
call, and on a busy or virtual machine the wake-ups cost more than the file work, so both ways
use the cheapest wake-up measured: a descriptor (an ``eventfd`` on Linux, a pipe elsewhere)
written only when the other side sleeps. A write to one lets the sleeper run without
preempting the writer, where a ``queue.SimpleQueue``'s futex wakes the thread into a wait for
the interpreter lock the caller still holds; and each loop gets a batch's answers with one
wake-up of its selector, where ``call_soon_threadsafe`` costs a socket send, two receives and a
callback handle per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import DriverError

if TYPE_CHECKING:
    from .file_journal import Replica
    from .file_store import JournalStore

__all__ = ["IOThread", "wake"]

_MAX_BATCH = 512  # operations sharing one lock acquisition, write and fsync
_ONE = (1).to_bytes(8, sys.byteorder)  # an eventfd adds up 8-byte counts; a pipe takes any byte


def _wakeup_fds(*, blocking_read: bool) -> tuple[int, int]:
    """(read end, write end) of a wake-up descriptor; the write end never blocks."""
    if hasattr(os, "eventfd"):
        flags = os.EFD_CLOEXEC | (0 if blocking_read else os.EFD_NONBLOCK)
        fd = os.eventfd(0, flags)  # its count cannot overflow: a write never blocks
        return fd, fd
    read_end, write_end = os.pipe()  # pragma: no cover - POSIX without eventfd
    os.set_blocking(write_end, False)  # pragma: no cover
    os.set_blocking(read_end, blocking_read)  # pragma: no cover
    return read_end, write_end  # pragma: no cover


def _close_fds(*fds: int) -> None:
    for fd in set(fds):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


class _IOCall:
    """One operation queued for the I/O thread, and where its answer goes."""

    __slots__ = ("answers", "args", "durable", "empty", "fn", "future", "locked", "skip")

    def __init__(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        answers: _Answers,
        future: asyncio.Future[Any],
        locked: bool,
        durable: bool,
        skip: Callable[[], bool] | None,
        empty: Any,
    ) -> None:
        self.fn = fn
        self.args = args
        self.answers = answers
        self.future = future
        #: Whether it runs under the lock after catching up.
        self.locked = locked
        #: Whether ``fsync: true`` must put its line on disk before it returns.
        self.durable = durable
        #: Answers ``empty`` without taking the lock when it returns True.
        self.skip = skip
        self.empty = empty


# (future, result, error) as the I/O thread settles a call
_Answer = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


class _Answers:
    """Where the I/O thread leaves answers for one event loop, and how it wakes that loop.

    This base class wakes the loop with ``call_soon_threadsafe`` (for loops that cannot watch
    a descriptor); ``_FdAnswers`` wakes it through a descriptor the loop's selector watches.
    Either way, one wake-up delivers every answer queued before it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.ready: deque[_Answer] = deque()
        # Set by the thread when it wakes the loop, cleared by the loop before it delivers:
        # answers queued while a wake-up is pending ride along with it.
        self._armed = False

    def post(self, answers: list[_Answer]) -> None:
        """Queue answers and wake the loop unless a wake-up is pending (I/O thread)."""
        self.ready.extend(answers)
        if not self._armed:
            self._armed = True
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(self.deliver)

    def deliver(self) -> None:
        """Settle every queued answer (on the loop)."""
        self._armed = False
        ready = self.ready
        while ready:
            future, result, error = ready.popleft()
            _settle(future, result, error)

    def close(self) -> None:
        """Stop watching for wake-ups (on the loop, or once the loop is closed)."""


class _FdAnswers(_Answers):
    """Answers for a loop that watches an ``eventfd`` (Linux) or a pipe (other POSIX)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self._rfd, self._wfd = _wakeup_fds(blocking_read=False)
        try:
            loop.add_reader(self._rfd, self._on_readable)
        except BaseException:
            _close_fds(self._rfd, self._wfd)
            raise

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: wake-ups are pending
            os.write(self._wfd, _ONE)

    def _on_readable(self) -> None:
        # Read before delivering: a wake-up written after this read is seen by the next turn.
        with contextlib.suppress(BlockingIOError):
            os.read(self._rfd, 4096)
        self.deliver()

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.remove_reader(self._rfd)
        _close_fds(self._rfd, self._wfd)
        self._rfd = self._wfd = -1


class IOThread:
    """The one thread that touches the store's files and replica.

    Calls queue up while it works; it takes them all, holds the lock once, catches up once,
    appends all their lines in one write and fsyncs once (group commit), then answers each.
    """

    def __init__(self, store: JournalStore, replica: Replica) -> None:
        self.store = store
        self.replica = replica
        #: Journal lines the calls of the batch under way queue for its one append.
        self.lines: list[bytes] = []
        # Calls waiting for the thread; None asks it to end. The thread sleeps reading _wake_r
        # only after setting _sleeping and finding this empty, so a call appended while it
        # works needs no wake-up.
        self._calls: deque[_IOCall | None] = deque()
        self._sleeping = False
        self._wake_r, self._wake_w = _wakeup_fds(blocking_read=True)
        self._abandoned = False
        # One per event loop that called; created on the loop's own thread.
        self._answers: dict[asyncio.AbstractEventLoop, _Answers] = {}
        self._thread = threading.Thread(
            target=self._run, name=f"queuekit-file {store.path}", daemon=True
        )
        self._thread.start()

    async def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        locked: bool = True,
        durable: bool = True,
        skip: Callable[[], bool] | None = None,
        empty: Any = None,
    ) -> Any:
        """Run ``fn(*args)`` on the thread and return its result (or raise its error).

        ``locked`` runs it under the lock after catching up; ``durable`` makes ``fsync: true``
        sync its lines before answering; ``skip`` (run on the thread first) answers ``empty``
        without the lock when it returns True.
        """
        loop = asyncio.get_running_loop()
        answers = self._answers.get(loop) or self._watch(loop)
        future: asyncio.Future[Any] = loop.create_future()
        self._calls.append(_IOCall(fn, args, answers, future, locked, durable, skip, empty))
        if self._sleeping:
            self._wake_thread()
        return await future

    def _watch(self, loop: asyncio.AbstractEventLoop) -> _Answers:
        try:
            answers: _Answers = _FdAnswers(loop)
        except (NotImplementedError, OSError):  # e.g. a loop that cannot watch descriptors
            answers = _Answers(loop)
        self._answers[loop] = answers
        return answers

    def stop(self) -> None:
        """Let the thread finish the calls already queued, then end."""
        self._calls.append(None)
        self._wake_thread()

    def abandon(self) -> None:
        """``stop()`` for a driver dropped without ``close()``: nobody can call any more, so
        the thread also closes its wake-up descriptor as it ends."""
        self._abandoned = True
        self.stop()

    def _wake_thread(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: wake-ups are pending
            os.write(self._wake_w, _ONE)

    async def join(self, timeout: float) -> None:
        """Wait (off the loop) for the thread to end, then stop watching for its answers.

        Each loop's watch is removed on that loop, where the selector lives.
        """
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            return  # still working: keep the descriptors it reads and writes
        _close_fds(self._wake_r, self._wake_w)
        self._wake_r = self._wake_w = -1
        current = asyncio.get_running_loop()
        answers, self._answers = self._answers, {}
        for loop, channel in answers.items():
            if loop is current or loop.is_closed():
                channel.close()
            else:
                try:
                    loop.call_soon_threadsafe(channel.close)
                except RuntimeError:  # closed meanwhile: its selector is gone with it
                    channel.close()

    def _run(self) -> None:
        calls = self._calls
        try:
            while True:
                self._sleeping = True
                if not calls:
                    os.read(self._wake_r, 4096)
                    continue
                self._sleeping = False
                batch: list[_IOCall] = []
                stopping = False
                while calls and len(batch) < _MAX_BATCH:
                    call = calls.popleft()
                    if call is None:
                        stopping = True
                        break
                    batch.append(call)
                if batch:
                    self._answer(batch, self._run_batch(batch))
                if stopping:
                    return
        finally:
            self._sleeping = False
            if self._abandoned:
                _close_fds(self._wake_r, self._wake_w)
                self._wake_r = self._wake_w = -1

    def _run_batch(self, batch: list[_IOCall]) -> list[_Answer]:
        """Run a batch; returns each call's (future, result, error) in order."""
        outcomes: list[_Answer] = []
        locked: list[tuple[int, _IOCall]] = []
        for call in batch:
            result, error = None, None
            try:
                if not call.locked:
                    result = call.fn(*call.args)
                elif call.skip is not None and call.skip():
                    result = call.empty
                else:
                    locked.append((len(outcomes), call))
            except Exception as e:
                error = e
            outcomes.append((call.future, result, error))
        if locked:
            for (i, call), (result, error) in zip(
                locked, self._run_locked([call for _, call in locked]), strict=True
            ):
                outcomes[i] = (call.future, result, error)
        return outcomes

    def _run_locked(self, calls: list[_IOCall]) -> list[tuple[Any, BaseException | None]]:
        store = self.store
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            store.lock()  # not ``with store.locked()``: this runs once per dispatch
            try:
                store.catch_up(self.replica)
                for call in calls:
                    try:
                        outcomes.append((call.fn(*call.args), None))
                    except Exception as e:
                        outcomes.append((None, e))
                wrote = bool(self.lines)
                if wrote:
                    store.append(b"".join(self.lines))
                store.maybe_compact(self.replica)
            finally:
                store.unlock()
            # Outside the lock: other processes go on while this one waits for the disk.
            if wrote and any(call.durable for call in calls):
                store.flush()
        except Exception as e:
            store.invalidate()
            error = e
            if not isinstance(e, DriverError):
                error = DriverError(f"file queue {store.path}: {type(e).__name__}: {e}")
                error.__cause__ = e
            return [(None, error)] * len(calls)
        finally:
            self.lines.clear()
        return outcomes

    def _answer(self, batch: list[_IOCall], outcomes: list[_Answer]) -> None:
        if len(batch) == 1:
            batch[0].answers.post(outcomes)
            return
        by_loop: dict[_Answers, list[_Answer]] = {}
        for call, outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(call.answers, []).append(outcome)
        for answers, settled in by_loop.items():
            answers.post(settled)


def wake(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` unless it is done (for ``loop.call_soon_threadsafe``)."""
    _settle(future, None, None)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
