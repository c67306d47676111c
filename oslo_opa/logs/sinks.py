"""Where decision events go: a file of JSON lines, or a decision-log
service that speaks OPA's protocol.

Both are called from the decision log's background thread only (see
:mod:`oslo_opa.background`), never on a request.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

LOG = logging.getLogger(__name__)


def dumps(event: dict[str, Any]) -> str:
    # The input is JSON-safe already; default=str for what a caller
    # smuggles into the oslo_opa member.
    return json.dumps(event, separators=(',', ':'), default=str)


class FileSink:
    """JSON lines appended to path, rotated when it reaches max_bytes:
    path becomes path.1, path.1 path.2, ... up to backups files."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._file: Any = None

    def write(self, events: Sequence[dict[str, Any]]) -> None:
        with self._lock:
            for event in events:
                if self._file is None:
                    # 0o600: events say who did what, if not secrets.
                    fd = os.open(
                        self.path,
                        os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                        0o600,
                    )
                    self._file = os.fdopen(fd, 'ab')
                self._file.write(dumps(event).encode('utf-8') + b'\n')
                if self._file.tell() >= self.max_bytes:
                    self._rotate()
            if self._file is not None:
                self._file.flush()

    def _rotate(self) -> None:
        self._file.close()
        self._file = None
        if self.backups <= 0:
            os.truncate(self.path, 0)
            return
        for n in range(self.backups - 1, 0, -1):
            older = f'{self.path}.{n}'
            if os.path.exists(older):
                os.replace(older, f'{self.path}.{n + 1}')
        os.replace(self.path, f'{self.path}.1')

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class ServiceSink:
    """OPA's decision-log service protocol: gzipped JSON arrays POSTed
    to ``<url>/logs``.

    Events wait in a buffer of at most ``buffer`` events and are sent in
    batches of ``batch_size``, at least every ``flush_interval`` seconds.
    A failed upload is tried again after a delay that doubles, from
    ``min_delay`` to ``max_delay`` seconds; meanwhile new events beyond
    the buffer are dropped and counted (``on_drop``).
    """

    def __init__(
        self,
        url: str,
        buffer: int = 10000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        timeout: tuple[float, float] = (1.0, 5.0),
        min_delay: float = 0.5,
        max_delay: float = 60.0,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url.rstrip('/') + '/logs'
        self.buffer = buffer
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.timeout = timeout
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.on_drop = on_drop
        self.dropped = 0
        self.sent = 0
        self._pending: list[dict[str, Any]] = []
        self._next_try = 0.0
        self._delay = 0.0
        self._last_flush = time.monotonic()
        self._session = requests.Session()

    def write(self, events: Sequence[dict[str, Any]]) -> None:
        room = self.buffer - len(self._pending)
        if room < len(events):
            lost = len(events) - max(room, 0)
            self.dropped += lost
            if self.on_drop is not None:
                self.on_drop(lost)
            events = events[: max(room, 0)]
        self._pending.extend(events)
        self.tick()

    def tick(self) -> None:
        """Send what is due (called by the thread, with or without new
        events)."""
        now = time.monotonic()
        if not self._pending or now < self._next_try:
            return
        if (
            len(self._pending) < self.batch_size
            and now - self._last_flush < self.flush_interval
        ):
            return
        while self._pending:
            chunk = self._pending[: self.batch_size]
            if not self._upload(chunk):
                self._delay = min(
                    max(self._delay * 2, self.min_delay), self.max_delay
                )
                self._next_try = time.monotonic() + self._delay
                return
            del self._pending[: len(chunk)]
            self.sent += len(chunk)
            self._delay = 0.0
        self._last_flush = time.monotonic()

    def _upload(self, chunk: list[dict[str, Any]]) -> bool:
        body = gzip.compress(
            ('[' + ','.join(dumps(e) for e in chunk) + ']').encode('utf-8')
        )
        try:
            answer = self._session.post(
                self.url,
                data=body,
                headers={
                    'Content-Type': 'application/json',
                    'Content-Encoding': 'gzip',
                },
                timeout=self.timeout,
            )
        except requests.RequestException as e:
            LOG.warning(
                'oslo.opa: decision log service %s: %s; %d events wait',
                self.url,
                type(e).__name__,
                len(self._pending),
            )
            return False
        if answer.status_code // 100 != 2:
            LOG.warning(
                'oslo.opa: decision log service %s answered %d; %d events '
                'wait',
                self.url,
                answer.status_code,
                len(self._pending),
            )
            return False
        return True

    def close(self) -> None:
        self._last_flush = 0.0
        self._next_try = 0.0
        self.tick()
        self._session.close()
