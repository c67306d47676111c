"""The decision cache: a bounded LRU of decisions with a time to live."""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Mapping
from typing import Any


class DecisionCache:
    """A bounded LRU of decisions with a time to live; thread-safe."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._data: collections.OrderedDict[Any, tuple[float, bool]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: Any) -> bool | None:
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            if hit[0] < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return hit[1]

    def put(self, key: Any, value: bool) -> None:
        with self._lock:
            self._data[key] = (time.monotonic() + self.ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def input_key(rule: str, doc: Mapping[str, Any]) -> str:
    """rule and doc as text: equal for equal decisions."""
    return json.dumps([rule, doc], sort_keys=True, separators=(',', ':'))
