"""ObjectRef: the awaitable result of an actor call, usable from any thread and process.

A ref wraps the future its runtime completes when the reply arrives: an asyncio future
when the call was made on the runtime's loop, a thread-safe `concurrent.futures.Future`
when it was made from another thread (the loop completes either directly). Waiting:
- on the runtime's loop: `await ref` awaits it directly (no thread hop);
- on another event loop (an async driver): one `call_soon_threadsafe` hands it over;
- from plain threads: `ref.result(timeout)` blocks on it (no hop for thread-made refs);
- on the runtime's own loop thread, `ref.result()` raises instead of deadlocking.

Pickled, a ref exports its value: the owner keeps it in its `Exports` (`_exports.py`)
and answers `rt/fetch` requests; the unpickled copy fetches from the owner when awaited.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import weakref
from collections.abc import Generator
from typing import Any

from ._context import current_or_init
from ._futures import CallFuture, copy_state
from ._inbox import LoopInbox
from ._runtime import Runtime
from .exceptions import GetTimeoutError

__all__ = ["ObjectRef"]

_DEADLOCK = ("{0!r}.result() was called on the runtime's event loop thread, where it would "
             "deadlock; use `await ref` in async code (actor methods, handlers)")


class ObjectRef:
    __slots__ = ("__weakref__", "_fut", "_label", "_rt")

    def __init__(self, fut: CallFuture, rt: Runtime, label: str = "") -> None:
        self._fut = fut
        self._rt = rt
        self._label = label

    def __repr__(self) -> str:
        state = "ready" if self._fut.done() else "pending"
        return f"ObjectRef({self._label}, {state})"

    def done(self) -> bool:
        return self._fut.done()

    def cancel(self) -> None:
        """Stop waiting for the value and cancel the call at the actor: an async method
        running there gets `CancelledError` (a sync method already running finishes).
        Awaiting the ref afterwards raises `CancelledError`. Callable from any thread."""
        fut = self._fut
        if not isinstance(fut, asyncio.Future) or self._rt.in_loop_thread():
            fut.cancel()
        else:
            self._rt.loop.call_soon_threadsafe(fut.cancel)

    def on_done(self, callback: Any) -> None:
        """Call `callback(ref)` once the value is ready (from the runtime's loop thread,
        or at once if it is ready already). Callable from any thread."""
        fut = self._fut
        if not isinstance(fut, asyncio.Future):
            fut.add_done_callback(lambda _: callback(self))
        elif fut.done():
            callback(self)
        else:
            self._rt.loop.call_soon_threadsafe(_add_done, fut, lambda _: callback(self))

    def future(self) -> asyncio.Future:
        """The result as an asyncio future on the runtime's loop (call on that loop)."""
        fut = self._fut
        return fut if isinstance(fut, asyncio.Future) else asyncio.wrap_future(fut, loop=self._rt.loop)

    def __await__(self) -> Generator[Any, None, Any]:
        fut = self._fut
        if not isinstance(fut, asyncio.Future):
            loop = asyncio.get_running_loop()
            if fut.done() or loop is self._rt.loop:
                return asyncio.wrap_future(fut).__await__()
            mine = loop.create_future()
            bridge = _bridge(loop)
            fut.add_done_callback(lambda f: bridge.put((f, mine)))
            mine.add_done_callback(self._cancel_if_cancelled)  # the awaiter gave up: so does the call
            return mine.__await__()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._rt.loop or fut.done():
            return fut.__await__()
        if running is None:
            raise RuntimeError(f"{self!r} was awaited outside a running event loop")
        return self._await_foreign(running).__await__()

    async def _await_foreign(self, loop: asyncio.AbstractEventLoop) -> Any:
        mine = loop.create_future()

        def transfer(src: CallFuture) -> None:
            loop.call_soon_threadsafe(copy_state, src, mine)

        self._rt.loop.call_soon_threadsafe(_add_done, self._fut, transfer)
        mine.add_done_callback(self._cancel_if_cancelled)
        return await mine

    def _cancel_if_cancelled(self, awaited: asyncio.Future) -> None:
        if awaited.cancelled() and not self._fut.done():
            self.cancel()

    def result(self, timeout: float | None = None) -> Any:
        """Block until the value is ready; raise its exception, or GetTimeoutError."""
        fut = self._fut
        if not isinstance(fut, asyncio.Future):
            if self._rt.in_loop_thread() and not fut.done():
                raise RuntimeError(_DEADLOCK.format(self))
            try:
                return fut.result(timeout)
            except concurrent.futures.TimeoutError:
                raise GetTimeoutError(f"{self!r} was not ready within {timeout}s") from None
        if fut.done():
            return fut.result()
        if self._rt.in_loop_thread():
            raise RuntimeError(_DEADLOCK.format(self))
        cf: concurrent.futures.Future = concurrent.futures.Future()
        self._rt.loop.call_soon_threadsafe(_add_done, self._fut, lambda f: copy_state(f, cf))
        try:
            return cf.result(timeout)
        except concurrent.futures.TimeoutError:
            raise GetTimeoutError(f"{self!r} was not ready within {timeout}s") from None

    def __reduce__(self):
        owner, export_id = self._rt.exports.export(self._fut)
        return (_borrowed, (owner, export_id, self._label))


_bridges: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _bridge(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    """Results for awaiters on a foreign loop, handed over once per burst."""
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = LoopInbox(loop, _copy_all)
    return bridge


def _copy_all(items: Any) -> None:
    for src, dst in items:
        copy_state(src, dst)


def _add_done(fut: CallFuture, cb: Any) -> None:
    fut.add_done_callback(cb)


def _borrowed(owner: str, export_id: int, label: str) -> ObjectRef:
    rt = current_or_init()
    if owner == rt.address:
        fut = rt.exports.local(export_id)
        if fut is not None:
            return ObjectRef(fut, rt, label)
    fut = rt.loop.create_future() if rt.in_loop_thread() else asyncio.Future(loop=rt.loop)

    def start() -> None:
        inner = rt.call(owner, b"rt/fetch", (export_id,))
        inner.add_done_callback(lambda f: copy_state(f, fut))

    if rt.in_loop_thread():
        start()
    else:
        rt.loop.call_soon_threadsafe(start)
    return ObjectRef(fut, rt, label)
