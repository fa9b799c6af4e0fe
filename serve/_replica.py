"""A replica: the user's class (or function) hosted in an actor, answering handle calls.

The replica actor is async; its own semaphore keeps the requests it runs at once to
max_ongoing_requests across all callers (the actor's max_concurrency is a little higher).
Its control methods are `@actors.unqueued`, so they never wait behind requests. Sync user
methods run on a thread so they never block the replica's loop (health checks,
reconfigure and shutdown keep working).
`reconfigure(user_config)` is called at start and on every `user_config` change; the
controller calls `check_health()` periodically and `prepare_for_shutdown()` before it
stops a replica, which waits for the requests in flight.

A streamed HTTP response (StreamingResponse, generator, an ingress app sending parts)
stays in flight here, holding its slot, from the request until its stream ends: the
proxy pulls its chunks by stream id (`stream_next`) from this same replica, or closes it
when the client leaves (`stream_close`); a stream nobody pulls for STREAM_IDLE_S (or never
pulled within STREAM_FIRST_PULL_S of its start) is closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import itertools
import logging
import os
import pickle
import time
import traceback
from dataclasses import dataclass
from typing import Any

import actors
from proxy import ChunkPump, HTTPChunks, HTTPStreamStart, StreamBody, run_asgi, to_http_response, to_starlette_request

from ._ingress import bind_app
from .messages import HTTP_METHOD

__all__ = ["ReplicaActor", "ReplicaContext", "get_replica_context"]

log = logging.getLogger(__name__)
STREAM_IDLE_S = 300.0  # a stream not pulled for this long has lost its proxy: closed
STREAM_FIRST_PULL_S = 30.0  # a stream never pulled this long after it opened: its caller gave up
_SWEEP_EVERY_S = 10.0
_CLOSED_KEPT = 1024  # why the latest streams were closed, for a late pull's error message


@dataclass(frozen=True, slots=True)
class ReplicaContext:
    """What `serve.get_replica_context()` returns inside a replica."""

    deployment: str
    replica_tag: str
    app_name: str
    servable_object: Any = None


_context: contextvars.ContextVar[ReplicaContext | None] = contextvars.ContextVar("serve_replica", default=None)
_process_context: ReplicaContext | None = None


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in; RuntimeError outside a replica."""
    ctx = _context.get() or _process_context
    if ctx is None:
        raise RuntimeError("serve.get_replica_context() was called outside a replica")
    return ctx


class ReplicaActor:
    """Hosts one replica. Created by the controller with `actors.remote(...)` options.

    Its control methods (`ready`, `reconfigure`, `check_health`, `prepare_for_shutdown`,
    and a stream's `stream_next`/`stream_close`) are `@actors.unqueued`: each caller keeps
    to max_ongoing_requests on its own, so together they can send more requests than the
    actor's max_concurrency; the extras wait in the actor's queue, and a health check
    behind them would time out and get a busy, healthy replica replaced."""

    def __init__(self, deployment: str, replica_tag: str, app_name: str, code: bytes, user_config: Any,
                 is_function: bool, max_ongoing_requests: int = 100) -> None:
        global _process_context
        self._deployment = deployment
        self._tag = replica_tag
        fn_or_cls, init_args, init_kwargs = pickle.loads(code)
        self._context = ReplicaContext(deployment, replica_tag, app_name)
        _process_context = self._context
        token = _context.set(self._context)
        try:
            self._callable = fn_or_cls if is_function else fn_or_cls(*init_args, **init_kwargs)
        finally:
            _context.reset(token)
        self._context = ReplicaContext(deployment, replica_tag, app_name, self._callable)
        self._asgi = None if is_function else bind_app(self._callable)
        _process_context = self._context
        self._is_function = is_function
        self._ongoing = 0
        # The replica's own bound: routers keep under it, this holds across all callers
        # (control calls such as check_health are not counted and never wait behind it).
        self._slots = asyncio.Semaphore(max_ongoing_requests)
        self._idle = asyncio.Event()
        self._idle.set()
        self._user_config_pending = user_config
        self._streams: dict[int, ChunkPump] = {}
        self._closed_why: dict[int, str] = {}  # stream id -> why it was closed (latest first out)
        self._stream_ids = itertools.count(1)
        self._sweeper: asyncio.Task | None = None

    @actors.unqueued  # control: never behind requests (see the class docstring)
    async def ready(self) -> dict[str, Any]:
        """Runs `reconfigure(user_config)` if there is one; answers when the replica can serve."""
        if self._user_config_pending is not None:
            await self.reconfigure(self._user_config_pending)
            self._user_config_pending = None
        return {"replica_tag": self._tag, "pid": os.getpid()}

    def _method(self, name: str) -> Any:
        if self._is_function:
            if name != "__call__":
                raise AttributeError(f"function deployment {self._deployment} has no method {name!r}")
            return self._callable
        if name.startswith("_") and name != "__call__":
            raise AttributeError(f"{self._deployment}.{name} is private and cannot be called through a handle")
        fn = getattr(self._callable, name, None)
        if fn is None or not callable(fn):
            raise AttributeError(f"deployment {self._deployment} has no method {name!r}")
        return fn

    async def handle_request(self, method: str, args: tuple, kwargs: dict) -> Any:
        await self._slots.acquire()
        self._ongoing += 1
        self._idle.clear()
        streaming = False
        try:
            result = await self._handle(method, args, kwargs)
            if type(result) is StreamBody:  # counted in flight until the stream ends
                streaming = True
                return self._open_stream(result)
            return result
        finally:
            if not streaming:
                self._request_done()

    def _request_done(self) -> None:
        self._slots.release()
        self._ongoing -= 1
        if self._ongoing == 0:
            self._idle.set()

    # -- streamed HTTP responses: the proxy pulls their chunks from this replica -------------
    def _open_stream(self, body: StreamBody) -> HTTPStreamStart:
        stream_id = next(self._stream_ids)
        token = _context.set(self._context)  # the iterator runs in this replica's context
        try:
            self._streams[stream_id] = ChunkPump(body.chunks, lambda: self._stream_closed(stream_id))
        finally:
            _context.reset(token)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_streams())
        return HTTPStreamStart(body.status, body.headers, stream_id)

    def _stream_closed(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is not None:
            self._closed_why.setdefault(stream_id, "it ended (its last chunks were already pulled)")
            while len(self._closed_why) > _CLOSED_KEPT:
                del self._closed_why[next(iter(self._closed_why))]
            self._request_done()

    def _close_stream(self, stream_id: int, pump: ChunkPump, why: str) -> None:
        if not pump.closed:
            self._closed_why.setdefault(stream_id, why)
            pump.close()

    @actors.unqueued  # never behind requests waiting for a slot that this stream holds
    async def stream_next(self, stream_id: int) -> HTTPChunks:
        """The chunks of a streamed response produced since the last pull (proxy only)."""
        pump = self._streams.get(stream_id)
        if pump is None:
            why = self._closed_why.get(stream_id, "unknown to this replica (restarted since?)")
            return HTTPChunks((), True, f"stream {stream_id} of {self._deployment} is closed: {why}")
        return await pump.pull()

    @actors.unqueued
    async def stream_close(self, stream_id: int) -> None:
        """The client left: stop the stream's iterator (its `finally` runs)."""
        pump = self._streams.get(stream_id)
        if pump is not None:
            self._close_stream(stream_id, pump, "closed by the proxy (its client left)")

    async def _sweep_streams(self) -> None:
        """Close streams nobody pulls any more (their proxy died), so they cannot leak."""
        while self._streams:
            await asyncio.sleep(_SWEEP_EVERY_S)
            now = time.monotonic()
            for stream_id, pump in list(self._streams.items()):
                # (never pulled: the proxy gave up on it as it started, e.g. its 504 crossed the start)
                idle_s = STREAM_IDLE_S if pump.pulled else STREAM_FIRST_PULL_S
                if not pump.pulling and now - pump.last_active > idle_s:
                    why = (f"not pulled for {idle_s}s (its proxy is gone?)" if pump.pulled else
                           f"never pulled within {idle_s}s of its start (its proxy gave up on it?)")
                    log.warning("closing a streamed response of %s: %s", self._deployment, why)
                    self._close_stream(stream_id, pump, why)

    async def _handle(self, method: str, args: tuple, kwargs: dict) -> Any:
        token = _context.set(self._context)
        http = method == HTTP_METHOD
        try:
            if http and self._asgi is not None:  # @serve.ingress: the app answers
                return await run_asgi(self._asgi, args[0])
            if http:  # from the proxy: the user's __call__ gets a starlette Request
                method, args, kwargs = "__call__", (to_starlette_request(args[0]),), {}
            fn = self._method(method)
            if inspect.iscoroutinefunction(fn):
                result = await fn(*args, **kwargs)
            else:
                ctx = contextvars.copy_context()
                result = await asyncio.get_running_loop().run_in_executor(None, lambda: ctx.run(fn, *args, **kwargs))
                if inspect.isawaitable(result):
                    result = await result
            if inspect.isgenerator(result) and not http:
                result = list(result)
            elif inspect.isasyncgen(result) and not http:
                result = [item async for item in result]
            return await to_http_response(result) if http else result
        except Exception:
            if http:  # the client gets a 500; the traceback goes to this replica's log
                traceback.print_exc()
            raise
        finally:
            _context.reset(token)

    @actors.unqueued
    async def reconfigure(self, user_config: Any) -> None:
        fn = getattr(self._callable, "reconfigure", None)
        if fn is None:
            raise AttributeError(f"deployment {self._deployment} got a user_config but has no reconfigure(config) method")
        result = fn(user_config)
        if inspect.isawaitable(result):
            await result

    @actors.unqueued
    async def check_health(self) -> bool:
        fn = getattr(self._callable, "check_health", None)
        if fn is not None:
            result = fn()
            if inspect.isawaitable(result):
                await result
        return True

    @actors.unqueued
    async def prepare_for_shutdown(self, wait_loop_s: float, timeout_s: float) -> int:
        """Wait (up to `timeout_s`) for the requests in flight; returns how many were left.
        First waits `wait_loop_s` so requests already routed here can still arrive."""
        await asyncio.sleep(min(wait_loop_s, timeout_s))  # grace for requests in transit
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s - wait_loop_s))
        except asyncio.TimeoutError:
            pass
        del_fn = getattr(self._callable, "__del__", None)
        if del_fn is not None and not self._is_function:
            try:
                result = del_fn()
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                log.warning("%s.__del__ raised during shutdown: %r", self._deployment, e)
        return self._ongoing
