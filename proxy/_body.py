"""Reading a request's body within its deadlines (the proxy's guard against slow clients).

`BodyReader` reads one body: at most `max_body_bytes` (None past it: the server answers
413), complete within `body_timeout_s` and with no gap between chunks over
`body_idle_timeout_s` (`TOO_SLOW` otherwise: the server answers `SLOW_BODY`, 408, and closes
the connection). A client that leaves mid-body gives `CUT_SHORT` (nothing to forward).
One timer per body, moved on at each chunk, cancels the read when it fires; the task's
cancel count is restored, so the request goes on to answer 408.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ._codec import whole_response

__all__ = ["BODY_IDLE_S", "CUT_SHORT", "SLOW_BODY", "TOO_SLOW", "BodyReader"]

BODY_IDLE_S = 30.0  # the default longest gap between a body's chunks (408 and close past it)
TOO_SLOW = b"<too slow>"  # sentinels, compared by identity
CUT_SHORT = b"<cut short>"
SLOW_BODY = whole_response(408, ((b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close")),
                           b"request body not received in time")


class BodyReader:
    """Reads one body within its deadlines: `total_s` from now, and `idle_s` between
    chunks. One timer, moved on at each chunk, cancels the read when it fires."""

    def __init__(self, max_bytes: int, total_s: float, idle_s: float = BODY_IDLE_S) -> None:
        self.max_bytes = max_bytes
        self.loop = asyncio.get_running_loop()
        self.end = self.loop.time() + total_s
        self.idle_s = idle_s
        self.expired = False
        self._task = asyncio.current_task()
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, receive: Any) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                self._arm()
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if self.expired:
                        self._uncancel()
                        return TOO_SLOW
                    raise
                if message["type"] == "http.disconnect":
                    return CUT_SHORT  # not the end of the body: the client is gone
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    return None
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
        finally:
            if self._timer is not None:
                self._timer.cancel()
        if self.expired:  # fired as the last chunk landed: its cancel is pending; take it here
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                self._uncancel()
            return TOO_SLOW
        return b"".join(chunks)

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(min(self.end, self.loop.time() + self.idle_s), self._expire)

    def _uncancel(self) -> None:
        """Our cancel was taken: keep the task's count of cancel requests right (3.11+)."""
        uncancel = getattr(self._task, "uncancel", None)
        if uncancel is not None:
            uncancel()

    def _expire(self) -> None:
        self.expired = True
        if self._task is not None:
            self._task.cancel()
