"""Handing items from any thread to one event loop, one wake-up of the loop per burst.

`put()` appends to a locked deque and schedules a drain only when none is pending, so a
burst of N items from another thread costs one `call_soon_threadsafe`, not N.
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["LoopInbox"]


class LoopInbox:
    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[Iterable[Any]], None]) -> None:
        self._loop = loop
        self._handle = handle
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False

    def put(self, item: Any) -> None:
        with self._lock:
            self._items.append(item)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._scheduled = False
        self._handle(items)
