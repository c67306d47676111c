"""A bounded queue drained by one daemon thread, off the request path.

Shadow comparisons and decision events are handed to a :class:`Worker`
with :meth:`Worker.put`, which never blocks: a full queue drops the item
and counts it.  The thread wakes every ``interval`` seconds (a request
never pays for waking it) and hands what waits to ``handle`` in batches.
Threads do not survive ``fork``: a forked API worker starts its own on
its first item.  Under eventlet's monkey patching the thread is a
green thread and the queue needs no lock (appends are atomic).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

_workers: weakref.WeakSet[Worker] = weakref.WeakSet()


class Worker:
    """Hands queued items to handle(list) in a background thread.

    :param name: the thread's name.
    :param handle: called with a list of items, in the thread; what it
        raises is logged and the items are lost.
    :param size: items waiting at most; more are dropped.
    :param on_drop: called with each dropped item (for counting).
    :param interval: seconds between looks at the queue.
    :param batch: items handed to handle at most per call.
    :param tick: called at every look, items or not (timed flushes).
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[list[Any]], None],
        size: int,
        on_drop: Callable[[Any], None] | None = None,
        interval: float = 0.05,
        batch: int = 8,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.handle = handle
        self.size = size
        self.on_drop = on_drop
        self.interval = interval
        self.batch = batch
        self.tick = tick
        self.dropped = 0
        self._items: collections.deque[Any] = collections.deque()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        _workers.add(self)

    def put(self, item: Any) -> bool:
        """Queue item (False: the queue is full and item was dropped)."""
        if len(self._items) >= self.size:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop(item)
            return False
        self._items.append(item)
        if self._thread is None:
            self._start()
        return True

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=self.name, daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            self._drain()
            if self._stop.wait(self.interval):
                self._drain()
                return
            if self.tick is not None:
                try:
                    self.tick()
                except Exception:  # noqa: BLE001 - the thread must live on
                    LOG.exception('oslo.opa: %s failed', self.name)

    def _drain(self) -> None:
        items = self._items
        while items:
            self._idle.clear()
            chunk = []
            while items and len(chunk) < self.batch:
                chunk.append(items.popleft())
            try:
                self.handle(chunk)
            except Exception:  # noqa: BLE001 - the thread must live on
                LOG.exception('oslo.opa: %s failed', self.name)
            # Let a request thread waiting for the GIL have it now, not
            # after the interpreter's switch interval (5 ms).
            time.sleep(0)
        self._idle.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued item is handled (True) or timeout."""
        deadline = time.monotonic() + timeout
        while not (not self._items and self._idle.is_set()):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(self.interval, 0.01))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Handle what is queued, then stop the thread."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        else:
            self._drain()

    def _forked(self) -> None:
        # The parent's thread does not exist here; its queue is the
        # parent's business.
        self._items = collections.deque()
        self._thread = None
        self._start_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()


def _after_fork() -> None:
    for worker in list(_workers):
        worker._forked()


if hasattr(os, 'register_at_fork'):
    os.register_at_fork(after_in_child=_after_fork)
