"""Values of refs this process pickled, kept for borrowers to fetch (`rt/fetch`).

Pickling an `ObjectRef` exports its future here under a process-unique id; the copy
fetches the value from this owner when awaited. A value stays `EXPORT_TTL_S` after it is
ready, then it is dropped (a borrower asking later gets a `KeyError` saying so).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from ._futures import CallFuture

__all__ = ["Exports", "EXPORT_TTL_S"]

EXPORT_TTL_S = 300.0
_export_ids = itertools.count(1)


def _add_done(fut: CallFuture, cb: Any) -> None:
    fut.add_done_callback(cb)


class Exports:
    def __init__(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        self._loop = loop
        self._address = address
        self._futs: dict[int, CallFuture] = {}
        self._by_future: dict[int, int] = {}

    def export(self, fut: CallFuture) -> tuple[str, int]:
        """Keep `fut`'s value for borrowers: returns (owner address, export id). Any thread."""
        key = id(fut)
        export_id = self._by_future.get(key)
        if export_id is None:
            export_id = next(_export_ids)
            self._futs[export_id] = fut
            self._by_future[key] = export_id
            eid = export_id
            self._loop.call_soon_threadsafe(_add_done, fut, lambda f: self._loop.call_soon_threadsafe(
                self._expire_later, eid, key))
        return self._address, export_id

    def _expire_later(self, export_id: int, key: int) -> None:
        def drop() -> None:
            self._futs.pop(export_id, None)
            self._by_future.pop(key, None)

        self._loop.call_later(EXPORT_TTL_S, drop)

    def local(self, export_id: int) -> CallFuture | None:
        return self._futs.get(export_id)

    async def fetch(self, export_id: int) -> Any:
        fut = self._futs.get(export_id)
        if fut is None:
            raise KeyError(
                f"object {export_id} is no longer held by its owner {self._address} "
                f"(exported values are kept {EXPORT_TTL_S:.0f}s after they are ready)"
            )
        afut = fut if isinstance(fut, asyncio.Future) else asyncio.wrap_future(fut)
        return await asyncio.shield(afut)
