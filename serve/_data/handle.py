"""Deployment handles and responses: calling deployments from Python.

`handle.remote(...)` / `handle.method.remote(...)` route through this process's `Router`
for the deployment and return a `DeploymentResponse`: awaitable, `.result(timeout_s)`,
accepted by `actors.get`, and passable as an argument to another handle call (resolved
before that call is routed). Handles are picklable: in another process they find the
controller by name and build their own router.

A call carries the request context of the code that makes it (`serve.get_request_context()`:
same request id, route and application), or a new request id outside any request; with
tracing on it is a span of its own, whose trace context goes along.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import weakref
from collections.abc import Callable
from typing import Any

from actors import GetTimeoutError, ObjectRef
from actors.system import LoopInbox, copy_state, current_runtime, runtime_or_init

from .._model import reject_unknown
from ..messages import DeploymentId
from . import tracing
from .client import ServeClient
from .context import NO_REQUEST, RID, Ctx, current_request, new_request_id

__all__ = ["DeploymentHandle", "DeploymentResponse", "RayServeHandle", "RayServeSyncHandle"]


class DeploymentResponse:
    """The result of a handle call: `await` it, or `.result(timeout_s)` from sync code.

    Made on an event loop (an async driver, a replica), a response is an asyncio future of
    that loop itself, so `await` and `asyncio.gather` take it as it is, with no task per
    call. Made from plain threads it wraps the call's `ObjectRef`."""

    __slots__ = ()

    def result(self, timeout_s: float | None = None) -> Any:
        raise NotImplementedError

    def _to_object_ref(self) -> ObjectRef:
        raise NotImplementedError

    def __reduce__(self):
        return (_RefResponse, (self._to_object_ref(),))


class _RefResponse(DeploymentResponse):
    """A response made from a thread without an event loop (a sync driver)."""

    __slots__ = ("_ref",)

    def __init__(self, ref: ObjectRef) -> None:
        self._ref = ref

    def __await__(self):
        return self._ref.__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        try:
            return self._ref.result(timeout_s)
        except GetTimeoutError:
            raise _not_ready(timeout_s) from None

    def _to_object_ref(self) -> ObjectRef:
        return self._ref

    def __repr__(self) -> str:
        return f"DeploymentResponse({'ready' if self._ref.done() else 'pending'})"


class _LoopResponse(asyncio.Future, DeploymentResponse):
    """A response made on an event loop: an asyncio future of that loop. Cancelling it
    abandons the request: it stops waiting for a replica, or stops waiting for the reply."""

    __slots__ = ("_source",)

    def __init__(self, *, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._source: asyncio.Future | None = None  # on the runtime's loop, once started

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        source = self._source
        if source is not None:
            loop = source.get_loop()
            if asyncio._get_running_loop() is loop:
                source.cancel()
            else:
                loop.call_soon_threadsafe(source.cancel)
        return True

    def result(self, timeout_s: float | None = None) -> Any:
        if self.done():
            return asyncio.Future.result(self)
        loop = self.get_loop()
        if asyncio._get_running_loop() is loop:
            raise RuntimeError("DeploymentResponse.result() was called on the event loop that awaits it, where it "
                               "would deadlock; use `await response` in async code")
        waiter: concurrent.futures.Future = concurrent.futures.Future()
        loop.call_soon_threadsafe(self.add_done_callback, lambda f: copy_state(f, waiter))
        try:
            return waiter.result(timeout_s)
        except concurrent.futures.TimeoutError:
            raise _not_ready(timeout_s) from None

    def _to_object_ref(self) -> ObjectRef:
        rt = current_runtime() or runtime_or_init()
        if self.get_loop() is rt.loop:
            return ObjectRef(self, rt, "DeploymentResponse")
        waiter: concurrent.futures.Future = concurrent.futures.Future()
        self.get_loop().call_soon_threadsafe(self.add_done_callback, lambda f: copy_state(f, waiter))
        return ObjectRef(waiter, rt, "DeploymentResponse")

    def __repr__(self) -> str:
        return f"DeploymentResponse({'ready' if self.done() else 'pending'})"


def _not_ready(timeout_s: float | None) -> TimeoutError:
    return TimeoutError(f"the deployment response was not ready within {timeout_s}s")


def _has_responses(args: tuple, kwargs: dict) -> bool:
    for a in args:
        if isinstance(a, DeploymentResponse):
            return True
    for v in kwargs.values():
        if isinstance(v, DeploymentResponse):
            return True
    return False


async def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Arguments with every top-level `DeploymentResponse` replaced by its value."""
    args = tuple([(await _value(a)) if isinstance(a, DeploymentResponse) else a for a in args])
    kwargs = {k: ((await _value(v)) if isinstance(v, DeploymentResponse) else v) for k, v in kwargs.items()}
    return args, kwargs


async def _value(response: DeploymentResponse) -> Any:
    """A response argument's value, shielded: this call being cancelled must not cancel the
    response, which its caller may have passed to other calls too (or await itself)."""
    if isinstance(response, _LoopResponse) and response.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(response)
    return await asyncio.shield(response._to_object_ref())


async def _call(client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
                ctx: Ctx) -> Any:
    """The slow path of a call: resolve response arguments, find the router, route."""
    args, kwargs = await _resolve(args, kwargs)
    router = await client.router(deployment)
    return await router.call(method, args, kwargs, ctx)


def _start(client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
           deliver: Callable[[asyncio.Future], Any], response: _LoopResponse | None, ctx: Ctx) -> None:
    """Start one call on the runtime's loop; `deliver(future)` gets its outcome."""
    if response is not None and response.done():
        return  # cancelled before it started
    client.count_call(deployment, ctx)
    router = client.router_now(deployment)
    source: asyncio.Future
    if router is not None and not _has_responses(args, kwargs):
        source = router.send(method, args, kwargs, deliver, ctx)
    else:
        source = client.rt.loop.create_task(_call(client, deployment, method, args, kwargs, ctx))
        source.add_done_callback(deliver)
    if response is not None:
        response._source = source


def _context_of_call(app_name: str) -> Ctx:
    """The request context a call carries: the caller's, or a new request's."""
    ctx = current_request.get()
    if ctx is NO_REQUEST:
        return (new_request_id(), "", app_name, "", "")
    return ctx


def _traced(deployment: str, method: str, ctx: Ctx) -> tuple[Any, Ctx]:
    """A span for one handle call (a child of the caller's current span), and the context
    that carries it on."""
    span = tracing.start(f"handle {deployment}.{method}", "CLIENT",
                         attributes={"serve.deployment": deployment, "serve.request_id": ctx[RID]})
    return span, (*ctx[:4], tracing.traceparent_of(span))


def _end_span(span: Any, fut: Any) -> None:
    error = None if fut.cancelled() else fut.exception()
    tracing.end(span, error=error if isinstance(error, Exception) else None)


class DeploymentHandle:
    """Calls a deployment. `handle.remote(...)` calls `__call__`, `handle.m.remote(...)` calls m."""

    def __init__(self, deployment_name: str, app_name: str = "default", method_name: str = "__call__") -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name
        self._id = DeploymentId(app_name, deployment_name)

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment={self.deployment_name!r}, method={self.method_name!r})"

    def __reduce__(self):
        return (DeploymentHandle, (self.deployment_name, self.app_name, self.method_name))

    def options(self, *, method_name: str | None = None, **options: Any) -> "DeploymentHandle":
        """A handle with other call options. Ray's option names are known (`stream`,
        `multiplexed_model_id`, `use_new_handle_api`, `_prefer_local_routing`); any other is an error."""
        reject_unknown(options, _HANDLE_OPTIONS, "handle.options()")
        return DeploymentHandle(self.deployment_name, self.app_name, method_name or self.method_name)

    def __getattr__(self, name: str) -> "DeploymentHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self.app_name, name)

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        client = ServeClient.current()
        rt = client.rt
        loop = asyncio._get_running_loop()
        name, method = self._id, self.method_name
        ctx = _context_of_call(self.app_name)
        span = None
        if tracing.ENABLED:
            span, ctx = _traced(self.deployment_name, method, ctx)
        if loop is not None:
            response = _LoopResponse(loop=loop)
            if span is not None:
                response.add_done_callback(functools.partial(_end_span, span))
            if loop is rt.loop:  # in a replica or actor: no hand-over at all
                _start(client, name, method, args, kwargs, functools.partial(copy_state, dst=response), response, ctx)
            else:  # an async driver: the outcome comes back to its loop per burst
                deliver = functools.partial(_bridge(loop).put, dst=response)
                client.submit(_start, (client, name, method, args, kwargs, deliver, response, ctx))
            return response
        waiter: concurrent.futures.Future = concurrent.futures.Future()
        if span is not None:
            waiter.add_done_callback(functools.partial(_end_span, span))
        deliver = functools.partial(copy_state, dst=waiter)
        client.submit(_start, (client, name, method, args, kwargs, deliver, None, ctx))
        return _RefResponse(ObjectRef(waiter, rt, f"{self.deployment_name}.{method}"))


_HANDLE_OPTIONS = ("method_name", "multiplexed_model_id", "stream", "use_new_handle_api", "_prefer_local_routing")

_bridges: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Bridge:
    """Outcomes for responses on a foreign loop (an async driver), handed over per burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._inbox = LoopInbox(loop, self._settle)

    def put(self, src: asyncio.Future, dst: asyncio.Future) -> None:
        self._inbox.put((src, dst))

    @staticmethod
    def _settle(items: Any) -> None:
        for src, dst in items:
            copy_state(src, dst)


def _bridge(loop: asyncio.AbstractEventLoop) -> _Bridge:
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = _Bridge(loop)
    return bridge


RayServeHandle = DeploymentHandle  # Ray Serve 1.x names
RayServeSyncHandle = DeploymentHandle
