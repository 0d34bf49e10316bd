"""``LoopPortal``: runs coroutines for synchronous callers on an event loop in a daemon thread.

``QueueManager.dispatch_sync`` uses it so that Flask, Django or a script can dispatch without an
event loop of their own, while the driver's connections stay on one loop for their whole life.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopPortal", "running_loop"]

T = TypeVar("T")


class LoopPortal:
    """A private event loop in a daemon thread, started on first use."""

    def __init__(self, name: str = "queuekit-portal") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The portal's loop, started if needed."""
        with self._lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name=self._name, daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's loop and block until it returns (or raises)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def started(self) -> bool:
        """True while the portal's loop runs."""
        return self._loop is not None and not self._loop.is_closed()

    def stop(self) -> None:
        """Stop the loop and join its thread; a later ``call`` starts a new one."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
