"""A replica: the user's class (or function) hosted in an actor, answering handle calls.

The replica actor is async; its own semaphore keeps the requests it runs at once to
max_ongoing_requests across all callers (the actor's max_concurrency is a little higher).
Its control methods are `@actors.unqueued`, so they never wait behind requests. Sync user
methods run on a thread so they never block the replica's loop (health checks,
reconfigure and shutdown keep working).
`reconfigure(user_config)` is called at start and on every `user_config` change; the
controller calls `check_health()` periodically and `prepare_for_shutdown()` before it
stops a replica, which waits for the requests in flight.

A streamed HTTP response stays in flight here, holding its slot, from the request until
its stream ends (`StreamRegistry`): the proxy pulls its chunks by stream id
(`stream_next`) from this same replica, or closes it when the client leaves
(`stream_close`).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import os
import pickle
import traceback
from typing import Any

import actors
from proxy import HTTPChunks, HTTPStreamStart, StreamBody, run_asgi, to_http_response, to_starlette_request

from ..messages import HTTP_METHOD
from .context import ReplicaContext, current_context, set_process_context
from .ingress import bind_app
from .streams import StreamRegistry

__all__ = ["ReplicaActor"]

log = logging.getLogger(__name__)


class ReplicaActor:
    """Hosts one replica. Created by the controller with `actors.remote(...)` options.

    Its control methods (`ready`, `reconfigure`, `check_health`, `prepare_for_shutdown`,
    and a stream's `stream_next`/`stream_close`) are `@actors.unqueued`: each caller keeps
    to max_ongoing_requests on its own, so together they can send more requests than the
    actor's max_concurrency; the extras wait in the actor's queue, and a health check
    behind them would time out and get a busy, healthy replica replaced."""

    def __init__(self, deployment: str, replica_tag: str, app_name: str, code: bytes, user_config: Any,
                 is_function: bool, max_ongoing_requests: int) -> None:
        self._deployment = deployment
        self._tag = replica_tag
        fn_or_cls, init_args, init_kwargs = pickle.loads(code)
        self._context = ReplicaContext(deployment, replica_tag, app_name)
        set_process_context(self._context)
        token = current_context.set(self._context)
        try:
            self._callable = fn_or_cls if is_function else fn_or_cls(*init_args, **init_kwargs)
        finally:
            current_context.reset(token)
        self._context = ReplicaContext(deployment, replica_tag, app_name, self._callable)
        self._asgi = None if is_function else bind_app(self._callable)
        set_process_context(self._context)
        self._is_function = is_function
        self._ongoing = 0
        # The replica's own bound: routers keep under it, this holds across all callers
        # (control calls such as check_health are not counted and never wait behind it).
        self._slots = asyncio.Semaphore(max_ongoing_requests)
        self._idle = asyncio.Event()
        self._idle.set()
        self._user_config_pending = user_config
        self._streams = StreamRegistry(deployment, self._request_done)

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
        token = current_context.set(self._context)  # the iterator runs in this replica's context
        try:
            return self._streams.open(body)
        finally:
            current_context.reset(token)

    @actors.unqueued  # never behind requests waiting for a slot that this stream holds
    async def stream_next(self, stream_id: int) -> HTTPChunks:
        """The chunks of a streamed response produced since the last pull (proxy only)."""
        return await self._streams.pull(stream_id)

    @actors.unqueued
    async def stream_close(self, stream_id: int) -> None:
        """The client left: stop the stream's iterator (its `finally` runs)."""
        self._streams.close(stream_id)

    async def _handle(self, method: str, args: tuple, kwargs: dict) -> Any:
        token = current_context.set(self._context)
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
            current_context.reset(token)

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

    async def __actors_drain__(self, timeout_s: float) -> None:
        """Its node stops gracefully (SIGTERM): finish the requests in flight, then `__del__`."""
        await self.prepare_for_shutdown(0.0, timeout_s)

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
