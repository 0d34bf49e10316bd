"""How idle reservers of the PostgreSQL dialect wake up: NOTIFY after a commit, LISTEN to it.

``CommitNotices`` sends the NOTIFY that announces jobs the driver's own statements have
committed. It goes out in a transaction of its own, after theirs, rather than inside them: a
transaction that sends a NOTIFY holds a lock shared by the whole server from its NOTIFY until
its commit has reached the disk, so concurrent dispatches that each notified inside their INSERT
committed one after another, and the server could not flush their commits together. The notice
commits without waiting for the disk (a notification does not outlive a server crash anyway), so
it holds that lock only for an instant, and commits that fall due within ``CommitNotices.DELAY``
share one NOTIFY per queue.

``Listener`` holds the one connection that LISTENs on the table's channel, opened on the first
reservation that waits (a process that only dispatches listens to nothing), and turns every
notification into ``Wakeups.wake``. Delayed jobs falling due and leases running out send no
NOTIFY: waiting reservers poll every ``poll_interval`` for those, and for everything while the
listening connection is down or a notice was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import psycopg

__all__ = ["CommitNotices", "Listener", "Wakeups"]

log = logging.getLogger("queuekit.database.postgres")

_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


class Wakeups:
    """Idle reservers waiting for a NOTIFY, and a counter telling whether one came meanwhile.

    A reserver reads ``generation`` before it queries and waits only if it has not moved since:
    a NOTIFY that lands between an empty query and the wait is never missed.
    """

    def __init__(self) -> None:
        self.generation = 0
        self._waiters: set[asyncio.Future[None]] = set()

    def wake(self) -> None:
        """Something may be due: every waiter looks again."""
        self.generation += 1
        waiters, self._waiters = self._waiters, set()
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait(self, seen: int, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a wake-up, unless one came after ``seen``."""
        if self.generation != seen or timeout <= 0:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.add(fut)
        try:
            await asyncio.wait({fut}, timeout=timeout)
        finally:
            self._waiters.discard(fut)
            fut.cancel()


class Listener:
    """The LISTEN connection of one driver, reconnecting with backoff when it drops.

    ``listen`` is the ``LISTEN "channel"`` statement; ``where`` names the table in log lines.
    """

    def __init__(
        self,
        conninfo: str,
        connect_kwargs: Mapping[str, Any],
        listen: bytes,
        wakeups: Wakeups,
        *,
        where: str,
        poll_interval: float,
    ) -> None:
        self._conninfo = conninfo
        self._connect_kwargs = dict(connect_kwargs)
        self._listen_sql = listen
        self._wakeups = wakeups
        self._where = where
        self._poll_interval = poll_interval
        self._task: asyncio.Task[None] | None = None
        # Set once the first LISTEN attempt is over, whether it worked or not.
        self._tried = asyncio.Event()

    async def ensure(self) -> None:
        """Start listening if not yet, and wait for the first attempt to LISTEN.

        Once that attempt succeeded, a push committed after this returns always wakes the caller.
        """
        self._forget_other_loop()
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"queuekit-listen {self._where}")
        await self._tried.wait()

    def _forget_other_loop(self) -> None:
        """Forget a listener of an earlier event loop (asyncio.run again): that loop cancelled
        it on the way out, so this one listens anew."""
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            self._task = None
            self._tried = asyncio.Event()

    async def close(self) -> None:
        """Stop listening and close the connection; idempotent."""
        self._forget_other_loop()
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # A driver connected again waits for its new LISTEN, not for the old one's outcome.
            self._tried = asyncio.Event()

    async def _listen(self) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
                await conn.execute(self._listen_sql)
                self._tried.set()
                backoff = _BACKOFF_FIRST
                # Jobs pushed while no LISTEN was in effect sent their NOTIFY to nobody.
                self._wakeups.wake()
                async for _ in conn.notifies():
                    self._wakeups.wake()
            except (psycopg.Error, OSError) as e:
                log.warning(
                    "queuekit: %s: no listening connection (%s); waiting reservers poll every "
                    "%ss until it is back",
                    self._where,
                    e,
                    self._poll_interval,
                )
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            self._tried.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)


class CommitNotices:
    """NOTIFYs announcing committed jobs, sent shortly after, several commits at once.

    ``send(queues)`` runs the NOTIFY of ``queues`` (sorted, each once) as a statement of its
    own; it reports its own failures. ``committed`` must be called only once the jobs' commit is
    known: a worker woken by the notice must find them.

    Example::

        notices = CommitNotices(send_notify)
        notices.committed("emails")     # after the INSERT of an "emails" job has committed
        await notices.close()           # sends what is pending, waits for what is in flight
    """

    #: Seconds a notice waits for more commits to share it: at one-by-one dispatch rates that
    #: is several jobs per NOTIFY, and an idle worker starts a job that much later at most.
    DELAY = 0.002

    def __init__(self, send: Callable[[list[str]], Awaitable[None]]) -> None:
        self._send = send
        self._pending: set[str] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def committed(self, queues: Iterable[str]) -> None:
        """Announce jobs of ``queues`` whose commit has completed (at the latest after DELAY)."""
        self._pending.update(queues)
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        # A timer of an earlier event loop (asyncio.run again) never fires: start one here.
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_later(self.DELAY, self._flush)
            self._timer_loop = loop

    def _flush(self) -> None:
        self._timer = None
        if not self._pending:
            return
        queues, self._pending = sorted(self._pending), set()
        task = asyncio.get_running_loop().create_task(self._send(queues))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def close(self, timeout: float) -> None:
        """Send what is pending now and wait up to ``timeout`` seconds for every notice."""
        loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.cancel()
            self._flush()
        # Notices of an earlier event loop went with it.
        in_flight = {task for task in self._in_flight if task.get_loop() is loop}
        if in_flight:
            await asyncio.wait(in_flight, timeout=timeout)
