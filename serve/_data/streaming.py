"""Streaming handle calls: `handle.options(stream=True).method.remote(...)` returns a
`DeploymentResponseGenerator` over the items the replica's generator yields.

The call is routed like any other (`Router.call_holding(..., stream=True)`); the replica
opens an item stream in its `StreamRegistry` (the same streams the proxy pulls HTTP bodies
from) and answers with its id. The generator then pulls batches of items from that replica
(`stream_next`) as the consumer asks for them, and closes it (`stream_close`) if the
consumer stops early.

Invariants:
- flow control: the replica's generator runs at most `proxy.ChunkPump`'s MAX_AHEAD items
  ahead of the pulls, and the caller pulls again only once it has handed out what it has;
- the request counts in flight at the caller's router (and holds its slot at the replica)
  from the call until the stream ends, fails, or is closed; exactly once released;
- `cancel()`, `aclose()`, a cancelled `async for` (its task was cancelled while waiting for
  items) and dropping an unfinished generator all close the stream at the replica, whose
  generator's `finally` runs; iterating after `cancel()` raises `asyncio.CancelledError`;
- an exception of the replica's generator is raised by the iteration that reaches it, after
  every item yielded before it; the iteration ends there.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from actors.system import PreparedCall, Runtime
from proxy import HTTPStreamStart

from ..messages import DeploymentId
from . import tracing
from .client import ServeClient
from .context import Ctx
from .outcomes import ignore_outcome
from .router import Router

__all__ = ["DeploymentResponseGenerator", "start_stream"]

Resolve = Callable[[tuple, dict], Awaitable[tuple[tuple, dict]]]


def _is_start(result: Any) -> bool:
    return isinstance(result, HTTPStreamStart)


class _Stream:
    """One streaming call's state; lives on the runtime's loop (every method runs there)."""

    def __init__(self, client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
                 ctx: Ctx, resolve: Resolve, span: Any = None, prepared: PreparedCall | None = None) -> None:
        self._client = client
        self._resolve = resolve
        self._span = span  # the call's span when tracing is on, ended with the stream
        self._call = (deployment, method, args, kwargs, ctx)
        self._prepared = prepared  # the call serialized by its caller (None: it holds responses)
        self._opening: asyncio.Task | None = None
        self._routing: asyncio.Task | None = None  # the routed call, within _opening
        self._router: Router | None = None
        self._replica: Any = None  # ReplicaInfo, once the replica has answered
        self._stream_id = 0
        self.closed = False  # closed early by the caller
        self.ended = False  # ended, failed or closed: nothing more to pull

    def start(self) -> None:
        if self._opening is None and not self.closed:
            self._opening = self._client.rt.loop.create_task(self._open())
            self._opening.add_done_callback(ignore_outcome)  # (a pull raises its error)

    async def _open(self) -> None:
        deployment, method, args, kwargs, ctx = self._call
        self._call = (deployment, method, (), {}, ctx)  # the arguments are not kept alive
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            args, kwargs = await self._resolve(args, kwargs)
        router = await self._client.router(deployment)
        # On a task of its own: `close()` cancels only this, so an answer that has already
        # landed is never lost to a cancellation (its stream is closed and released below).
        self._routing = asyncio.get_running_loop().create_task(
            router.call_holding(method, args, kwargs, _is_start, ctx, stream=True, prepared=prepared, handle=True))
        start, replica = await asyncio.shield(self._routing)
        if replica is None:  # cannot happen: a stream=True call answers with a stream start
            raise TypeError(f"{deployment.name}.{method} did not answer a stream=True call with a stream")
        self._router, self._replica, self._stream_id = router, replica, start.stream_id
        if self.closed:  # closed while it was opening
            self._close_remote()

    async def pull(self) -> tuple[Any, ...]:
        """The next items (waiting for at least one); () once the stream has ended."""
        if self.closed:
            raise asyncio.CancelledError("the DeploymentResponseGenerator was cancelled")
        if self.ended:
            return ()
        self.start()
        assert self._opening is not None
        try:
            while True:
                if not self._opening.done():
                    await asyncio.shield(self._opening)
                self._opening.result()  # the call's own error, if it failed
                batch = await self._replica.handle.stream_next.remote(self._stream_id)
                if batch.done:
                    self._end()
                    if batch.error is not None:  # closed at the replica (its sweeper, a restart)
                        raise RuntimeError(batch.error)
                if batch.chunks or batch.done:
                    return batch.chunks
        except asyncio.CancelledError:
            self.close()  # the consumer gave up while waiting: so does the replica
            raise
        except BaseException as e:
            self._end(e)
            raise

    def _end(self, error: BaseException | None = None) -> None:
        if not self.ended:
            self.ended = True
            if self._router is not None:
                self._router.release(self._replica)
        self._end_span(error)

    def _end_span(self, error: BaseException | None) -> None:
        span, self._span = self._span, None
        if span is not None:
            tracing.end(span, error=error if isinstance(error, Exception) else None)

    def close(self) -> None:
        """Stop the stream early (idempotent): its replica's generator is closed."""
        if self.ended or self.closed:
            self.closed = True
            return
        self.closed = True
        self._end_span(None)
        if self._opening is not None and not self._opening.done():
            # not answered yet: abandon the call (or, if its answer is in, `_open` closes it)
            (self._routing or self._opening).cancel()
        elif self._replica is not None:
            self._close_remote()

    def _close_remote(self) -> None:
        self._replica.handle.stream_close.remote(self._stream_id).future().add_done_callback(ignore_outcome)
        self._end()


class DeploymentResponseGenerator:
    """The items of a streaming handle call (`handle.options(stream=True)`), as the
    replica's generator yields them: `async for` in async code (in a deployment), `for`
    in sync code. `cancel()` stops it and closes the replica's generator.

    It cannot be passed to another handle call or pickled: iterate it and pass the items.
    An ingress may return `StreamingResponse(generator)` to stream its items over HTTP."""

    __slots__ = ("__weakref__", "_buf", "_cancelled", "_done", "_rt", "_stream")

    def __init__(self, stream: _Stream, rt: Runtime) -> None:
        self._stream = stream
        self._rt = rt
        self._buf: collections.deque[Any] = collections.deque()
        self._done = False
        self._cancelled = False

    def __repr__(self) -> str:
        return f"DeploymentResponseGenerator({'finished' if self._done else 'open'})"

    def __reduce__(self):
        raise TypeError("a DeploymentResponseGenerator cannot be pickled or passed to another handle call; "
                        "iterate it and pass its items")

    # -- async ------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError("the DeploymentResponseGenerator was cancelled")
        if not self._buf:
            if self._done:
                raise StopAsyncIteration
            if asyncio.get_running_loop() is self._rt.loop:
                items = await self._stream.pull()
            else:
                items = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._pull(), self._rt.loop))
            self._take(items)
            if not items:
                raise StopAsyncIteration
        return self._buf.popleft()

    async def _pull(self) -> tuple[Any, ...]:
        return await self._stream.pull()

    def _take(self, items: tuple[Any, ...]) -> None:
        if items:
            self._buf.extend(items)
        else:
            self._done = True

    async def aclose(self) -> None:
        """Stop the stream if it has not ended (as `cancel()`)."""
        if not self._done:
            self.cancel()

    # -- sync -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._cancelled:
            raise asyncio.CancelledError("the DeploymentResponseGenerator was cancelled")
        if not self._buf:
            if self._done:
                raise StopIteration
            try:
                items = self._rt.run_threadsafe(self._pull)
            except BaseException:
                self._done = True
                raise
            self._take(items)
            if not items:
                raise StopIteration
        return self._buf.popleft()

    # -- stopping ---------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the stream: the replica's generator is closed (its `finally` runs); items
        not yet taken are dropped, and iterating further raises `asyncio.CancelledError`."""
        self._buf.clear()
        self._cancelled = True
        self._on_loop(self._stream.close)

    def _on_loop(self, fn: Any) -> None:
        if asyncio._get_running_loop() is self._rt.loop:
            fn()
        elif not self._rt.loop.is_closed():
            self._rt.loop.call_soon_threadsafe(fn)

    def __del__(self) -> None:
        stream = getattr(self, "_stream", None)
        if stream is not None and not stream.ended and not stream.closed:
            try:
                self._on_loop(stream.close)  # dropped unfinished: free the replica's slot now
            except Exception:
                pass  # (the loop is gone: so is the stream)


def start_stream(client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
                 ctx: Ctx, resolve: Resolve, span: Any = None,
                 prepared: PreparedCall | None = None) -> DeploymentResponseGenerator:
    """Start a streaming call (from any thread); its generator. `resolve(args, kwargs)`:
    the arguments with `DeploymentResponse`s replaced by their values (when there are any:
    otherwise `prepared` holds the call, serialized by its caller, `stream=True` included)."""
    stream = _Stream(client, deployment, method, args, kwargs, ctx, resolve, span, prepared)
    if asyncio._get_running_loop() is client.rt.loop:
        stream.start()
    else:
        client.submit(_Stream.start, (stream,))
    return DeploymentResponseGenerator(stream, client.rt)
