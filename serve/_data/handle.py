"""Deployment handles and responses: calling deployments from Python.

`handle.remote(...)` / `handle.method.remote(...)` route through this process's `Router`
for the deployment and return a `DeploymentResponse`: awaitable, `.result(timeout_s)`,
accepted by `actors.get`, and passable as an argument to another handle call (resolved
before that call is routed; so is an actor call's `ObjectRef`, as in Ray). Handles are picklable: in another process they find the
controller by name and build their own router.

Every call (streaming or not) serializes its arguments in the caller's thread, so one that
cannot be serialized raises TypeError at the call, naming it, and touches no other call; a
call with response arguments serializes the others there as a check, and the whole call once
they have resolved.

A call carries the request context of the code that makes it (`serve.get_request_context()`:
same request id, route and application), or a new request id outside any request; with
tracing on it is a span of its own, whose trace context goes along. Its multiplexed model id
is the handle's (`.options(multiplexed_model_id=...)`, "" by default), not the caller's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import weakref
from collections.abc import Callable
from typing import Any

from actors import GetTimeoutError, ObjectRef
from actors.system import LoopInbox, PreparedCall, copy_state, current_runtime, prepare_call, runtime_or_init

from .._model import reject_unknown
from ..messages import DeploymentId
from . import tracing
from .client import ServeClient
from .context import APP, MODEL, NO_REQUEST, RID, ROUTE, TRACE, Ctx, current_request, new_request_id
from .streaming import DeploymentResponseGenerator, start_stream

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator", "RayServeHandle",
           "RayServeSyncHandle"]


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


_RESOLVED = (DeploymentResponse, ObjectRef)  # top-level arguments resolved before a call


def _has_responses(args: tuple, kwargs: dict) -> bool:
    for a in args:
        if isinstance(a, _RESOLVED):
            return True
    for v in kwargs.values():
        if isinstance(v, _RESOLVED):
            return True
    return False


async def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Arguments with every top-level `DeploymentResponse` and `ObjectRef` (an actor call's,
    as Ray resolves them) replaced by its value."""
    args = tuple([(await _value(a)) if isinstance(a, _RESOLVED) else a for a in args])
    kwargs = {k: ((await _value(v)) if isinstance(v, _RESOLVED) else v) for k, v in kwargs.items()}
    return args, kwargs


async def _value(response: DeploymentResponse | ObjectRef) -> Any:
    """A response (or ref) argument's value, shielded: this call being cancelled must not
    cancel the response, which its caller may have passed to other calls too (or await itself)."""
    if isinstance(response, ObjectRef):
        return await asyncio.shield(response)
    if isinstance(response, _LoopResponse) and response.get_loop() is asyncio.get_running_loop():
        return await asyncio.shield(response)
    return await asyncio.shield(response._to_object_ref())


def _prepare(call: tuple, args: tuple, kwargs: dict, what: str, span: Any) -> PreparedCall:
    """`call` (the arguments of the replica's `handle_request`) serialized now; if it cannot
    be, the TypeError names the user's argument that cannot."""
    try:
        return prepare_call(call, None, what)
    except TypeError as e:
        if span is not None:
            tracing.end(span, error=e)
        prepare_call(args, kwargs, what)  # raises the error that names the user's argument
        raise


def _check_arguments(args: tuple, kwargs: dict, what: str, span: Any) -> None:
    """For a call whose response arguments are resolved before it is sent (and so serialized
    only then): serialize the other arguments now, in their places, so that one that cannot
    be serialized fails the call at once, named by its position or keyword."""
    try:
        prepare_call(tuple([None if isinstance(a, _RESOLVED) else a for a in args]),
                     {k: None if isinstance(v, _RESOLVED) else v for k, v in kwargs.items()}, what)
    except TypeError as e:
        if span is not None:
            tracing.end(span, error=e)
        raise


async def _call(client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
                ctx: Ctx, prepared: PreparedCall | None) -> Any:
    """The slow path of a call: resolve response arguments, find the router, route."""
    if prepared is None:
        args, kwargs = await _resolve(args, kwargs)
    router = await client.router(deployment)
    return await router.call(method, args, kwargs, ctx, prepared)


def _start(client: ServeClient, deployment: DeploymentId, method: str, args: tuple, kwargs: dict,
           deliver: Callable[[asyncio.Future], Any], response: _LoopResponse | None, ctx: Ctx,
           prepared: PreparedCall | None) -> None:
    """Start one call on the runtime's loop; `deliver(future)` gets its outcome (also if
    starting it fails: one call's failure never reaches the others started with it).
    `prepared`: the call's arguments serialized by the caller (None: they hold responses,
    resolved first)."""
    if response is not None and response.done():
        return  # cancelled before it started
    try:
        router = client.router_now(deployment)
        source: asyncio.Future
        if router is not None and prepared is not None:
            source = router.send(method, args, kwargs, deliver, ctx, prepared)
        else:
            source = client.rt.loop.create_task(_call(client, deployment, method, args, kwargs, ctx, prepared))
            source.add_done_callback(deliver)
    except Exception as e:
        source = client.rt.loop.create_future()
        source.set_exception(e)
        deliver(source)
    if response is not None:
        response._source = source


def _context_of_call(app_name: str, model: str = "") -> Ctx:
    """The request context a call carries: the caller's, or a new request's (with the
    handle's model id)."""
    ctx = current_request.get()
    if ctx is NO_REQUEST:
        return (new_request_id(), "", app_name, model, "")
    if ctx[MODEL] != model:
        return (ctx[RID], ctx[ROUTE], ctx[APP], model, ctx[TRACE])
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
    """Calls a deployment. `handle.remote(...)` calls `__call__`, `handle.m.remote(...)` calls m.
    With `.options(stream=True)`, calls return a `DeploymentResponseGenerator` over the items
    the method yields; with `.options(multiplexed_model_id="m1")` they go to a replica that
    holds model m1 if one does (`serve.get_multiplexed_model_id()` inside)."""

    def __init__(self, deployment_name: str, app_name: str = "default", method_name: str = "__call__",
                 stream: bool = False, multiplexed_model_id: str = "") -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name
        self.stream = stream
        self.multiplexed_model_id = multiplexed_model_id
        self._id = DeploymentId(app_name, deployment_name)

    def __repr__(self) -> str:
        streaming = ", stream=True" if self.stream else ""
        model = f", multiplexed_model_id={self.multiplexed_model_id!r}" if self.multiplexed_model_id else ""
        return f"DeploymentHandle(deployment={self.deployment_name!r}, method={self.method_name!r}{streaming}{model})"

    def __reduce__(self):
        return (DeploymentHandle, (self.deployment_name, self.app_name, self.method_name, self.stream,
                                   self.multiplexed_model_id))

    def options(self, *, method_name: str | None = None, stream: bool | None = None,
                **options: Any) -> "DeploymentHandle":
        """A handle with other call options. Ray's option names are known (`stream`,
        `multiplexed_model_id`, `use_new_handle_api`, `_prefer_local_routing`); any other is an error."""
        reject_unknown(options, _HANDLE_OPTIONS, "handle.options()")
        if method_name is not None and not isinstance(method_name, str):
            raise TypeError(f"handle.options(method_name=...) takes a method's name, got {method_name!r}")
        if stream is not None and not isinstance(stream, bool):
            raise TypeError(f"handle.options(stream=...) takes True or False, got {stream!r}")
        model = options.get("multiplexed_model_id", self.multiplexed_model_id)
        if not isinstance(model, str):
            raise TypeError(f"handle.options(multiplexed_model_id=...) takes a model id (a string), got {model!r}")
        return DeploymentHandle(self.deployment_name, self.app_name, method_name or self.method_name,
                                self.stream if stream is None else stream, model)

    def __getattr__(self, name: str) -> "DeploymentHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self.app_name, name, self.stream, self.multiplexed_model_id)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """A `DeploymentResponse` (a `DeploymentResponseGenerator` with `stream=True`)."""
        client = ServeClient.current()
        rt = client.rt
        loop = asyncio._get_running_loop()
        name, method = self._id, self.method_name
        ctx = _context_of_call(self.app_name, self.multiplexed_model_id)
        span = None
        if tracing.ENABLED:
            span, ctx = _traced(self.deployment_name, method, ctx)
        # Serialized here, so that an argument that cannot be serialized fails this call at
        # once, naming it, and nothing else (a failure on the runtime's loop would be late,
        # and would name only the replica's entry point).
        what = f"{self.deployment_name}.{method}"
        prepared = None
        if _has_responses(args, kwargs):  # sent once they resolve: the others are checked now
            _check_arguments(args, kwargs, what, span)
        elif self.stream:
            prepared = _prepare((method, args, kwargs, ctx, True), args, kwargs, what, span)
        else:
            prepared = _prepare((method, args, kwargs, ctx), args, kwargs, what, span)
        if self.stream:
            return start_stream(client, name, method, args, kwargs, ctx, _resolve, span, prepared)
        if loop is not None:
            response = _LoopResponse(loop=loop)
            if span is not None:
                response.add_done_callback(functools.partial(_end_span, span))
            if loop is rt.loop:  # in a replica or actor: no hand-over at all
                _start(client, name, method, args, kwargs, functools.partial(copy_state, dst=response), response, ctx,
                       prepared)
            else:  # an async driver: the outcome comes back to its loop per burst
                deliver = functools.partial(_bridge(loop).put, dst=response)
                client.submit(_start, (client, name, method, args, kwargs, deliver, response, ctx, prepared))
            return response
        waiter: concurrent.futures.Future = concurrent.futures.Future()
        if span is not None:
            waiter.add_done_callback(functools.partial(_end_span, span))
        deliver = functools.partial(copy_state, dst=waiter)
        client.submit(_start, (client, name, method, args, kwargs, deliver, None, ctx, prepared))
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


class RayServeHandle:
    """A Ray Serve 1.x async handle (`serve.get_handle(name, sync=False)`,
    `Deployment.get_handle(sync=False)`): `ref = await handle.remote(...)` sends the call and
    gives its `DeploymentResponse`; `await ref` (or `actors.get(ref)`) gives the result.
    `.options(...)` and `handle.method` work as on a `DeploymentHandle`."""

    __slots__ = ("_handle",)

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    @property
    def deployment_name(self) -> str:
        return self._handle.deployment_name

    @property
    def app_name(self) -> str:
        return self._handle.app_name

    @property
    def method_name(self) -> str:
        return self._handle.method_name

    def __repr__(self) -> str:
        return f"RayServeHandle(deployment={self.deployment_name!r}, method={self.method_name!r})"

    def __reduce__(self):
        return (RayServeHandle, (self._handle,))

    def options(self, **options: Any) -> "RayServeHandle":
        return RayServeHandle(self._handle.options(**options))

    def __getattr__(self, name: str) -> "RayServeHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return RayServeHandle(getattr(self._handle, name))

    async def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        return self._handle.remote(*args, **kwargs)


RayServeSyncHandle = DeploymentHandle  # Ray Serve 1.x: a handle whose calls are used from sync code
