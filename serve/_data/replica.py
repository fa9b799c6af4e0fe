"""A replica: the user's class (or function) hosted in an actor, answering handle calls.

The replica actor is async; its own semaphore keeps the requests it runs at once to
max_ongoing_requests across all callers (the actor's max_concurrency is a little higher).
Its control methods are `@actors.unqueued`, so they never wait behind requests. Sync user
code (request methods, `__init__`, `reconfigure`, `check_health`) runs on a thread, so it
never blocks the replica's loop and may block on runtime calls (`actors.get`, a handle's
`.result()`); `async def __init__` is awaited.
Start (`ready`): the user's constructor, an ingress app's lifespan startup, then
`reconfigure(user_config)` and the first `check_health()`; a failure of any of them fails
the start (the controller retries, then reports the deployment unhealthy with the error).
`reconfigure(user_config)` is called on every `user_config` change; the controller calls
`check_health()` periodically and `prepare_for_shutdown()` before it stops a replica,
which waits for the requests in flight, then runs the ingress app's shutdown events.

A streamed HTTP response stays in flight here, holding its slot, from the request until
its stream ends (`StreamRegistry`): the proxy pulls its chunks by stream id
(`stream_next`) from this same replica, or closes it when the client leaves
(`stream_close`). A handle call with `stream=True` (`handle_request(..., stream=True)`)
is the same kind of stream, of the items its generator yields, pulled by the caller's
`DeploymentResponseGenerator`; without `stream=True` a generator's items come back as
one list.
A websocket (to an `@serve.ingress` app) holds its slot the same way
until its app ends; the proxy pulls the app's messages (`websocket_pull`) and pushes the
client's (`websocket_push`). Only an ASGI ingress reports the websocket entry among its
methods; another replica refuses a handshake as an app closing it would (403 to the client,
no error, no traceback).

Observability: before the user's constructor runs, the process's logging goes to the
replica's log file as its `LoggingConfig` says (`logs.configure`; changed live by
`set_logging_config`). Each request runs with the request context its caller sent
(`serve.get_request_context()`, the request id in every log line), is counted in the
`serve_deployment_*` metrics, written to the access log, and traced when tracing is on.
A user exception is logged here with its traceback (the caller gets it too).

Multiplexing: the models a `@serve.multiplexed` loader holds are reported to the controller
when they change (debounced by MODELS_DEBOUNCE_S; see `multiplex`), and again with each
health check (so a restarted controller, which adopts the replica and checks its health at
once, hears of them; an unchanged report changes nothing there); the controller passes
them on to routers with the replica set.

This module owns the actor: its state, start, request slots (`handle_request`), health,
reconfiguration and shutdown. Its other parts are mixins, each in its own module:
- `dispatch.MethodDispatch`: calling the user's code by method name;
- `request_obs.RequestObservation`: the metrics and access-log line of a request;
- `replica_streams.StreamEndpoints`: the stream and websocket methods callers pull and push.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import logging
import os
import pickle
import time
from typing import Any

import actors
from actors.system import current_runtime, node_logs_dir
from proxy import StreamBody, WebSocketSession, WebSocketSessions

from .._obs_config import LoggingConfig, TracingConfig
from ..messages import WEBSOCKET_METHOD, DeploymentId, ReplicaId
from . import counting, logs, multiplex, tracing
from .client import ServeClient
from .context import (
    NO_REQUEST,
    RID,
    TRACE,
    Ctx,
    ReplicaContext,
    current_context,
    current_request,
    set_process_context,
)
from .dispatch import MethodDispatch, public_methods
from .ingress import bind_app
from .lifespan import Lifespan
from .replica_streams import StreamEndpoints
from .request_obs import RequestObservation
from .serve_metrics import replica_metrics
from .streams import StreamRegistry

__all__ = ["ReplicaActor"]

log = logging.getLogger(__name__)
MODELS_DEBOUNCE_S = 0.05  # changes of the models held within this go to the controller as one report
_MODELS_ATTEMPTS = 5  # a report the controller does not take is tried this often (then at the next change)


class ReplicaActor(MethodDispatch, RequestObservation, StreamEndpoints):
    """Hosts one replica. Created by the controller with `actors.remote(...)` options.

    Its control methods (`ready`, `reconfigure`, `check_health`, `prepare_for_shutdown`,
    and a stream's `stream_next`/`stream_close`) are `@actors.unqueued`: each caller keeps
    to max_ongoing_requests on its own, so together they can send more requests than the
    actor's max_concurrency; the extras wait in the actor's queue, and a health check
    behind them would time out and get a busy, healthy replica replaced."""

    def __init__(self, deployment: str, replica_tag: str, app_name: str, code: bytes, user_config: Any,
                 is_function: bool, max_ongoing_requests: int, logging_config: LoggingConfig | None = None,
                 tracing_config: TracingConfig | None = None, health_check_timeout_s: float | None = None) -> None:
        self._deployment = deployment
        self._tag = replica_tag
        self._app = app_name
        self._id = ReplicaContext(deployment, replica_tag, app_name).replica_id  # as str(ReplicaId)
        self._who = logs.Who.replica(app_name, deployment, replica_tag)
        self._cells: dict[str, tuple[Any, Any, Any]] | None = None
        if counting.ENABLED:
            self._cells = {}
            metrics = replica_metrics()
            metrics.starts.cell(deployment, self._id, app_name).value += 1
            metrics.processing.add_source(self)
        self._access: logs.AccessLog | None = None
        self._configure_logs(logging_config)
        tracing.configure(tracing_config)
        # The user's constructor runs in `ready()` (see `_start`), off this constructor: on the
        # event loop's thread it could make no blocking runtime call, and could not be async.
        self._code = pickle.loads(code)
        self._callable: Any = None
        self._starting: asyncio.Future | None = None
        self._phase = "constructor"  # what the start is doing (`start_phase`, for the status)
        self._context = ReplicaContext(deployment, replica_tag, app_name)
        set_process_context(self._context)
        self._asgi: Any = None
        self._lifespan: Lifespan | None = None
        self._is_function = is_function
        self._methods: list[str] = []  # what handles may call: known once the start built the callable
        self._kinds: dict[str, tuple[Any, int]] = {}  # method name -> (callable, how it runs), as called
        self._call_takes_request: bool | None = None  # known at the first HTTP request
        self._ongoing = 0
        # The replica's own bound: routers keep under it, this holds across all callers
        # (control calls such as check_health are not counted and never wait behind it).
        self._slots = asyncio.Semaphore(max_ongoing_requests)
        self._idle = asyncio.Event()
        self._idle.set()
        self._user_config_pending = user_config
        self._health_timeout_s = health_check_timeout_s
        self._logging = logging_config
        self._streams = StreamRegistry(deployment, self._request_done)
        self._sockets = WebSocketSessions(self._request_done)
        self._models: tuple[tuple[str, ...], int] | None = None  # the multiplexed models held, to report
        self._models_task: asyncio.Task | None = None
        multiplex.set_listener(self._models_changed)

    @actors.unqueued  # control: never behind requests (see the class docstring)
    async def ready(self) -> dict[str, Any]:
        """Builds the replica (`_start`) the first time; answers when it can serve. Asked
        again (a restarted controller), it waits for the same start."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await asyncio.shield(self._starting)
        rt = current_runtime()
        # Its methods, and WEBSOCKET_METHOD if it takes websockets: routers (the proxy's
        # too) then refuse a websocket to a deployment that does not, without asking it.
        methods = [*self._methods, WEBSOCKET_METHOD] if self._asgi is not None else self._methods
        return {"replica_tag": self._tag, "pid": os.getpid(), "methods": methods,
                "max_models": 0 if self._is_function else multiplex.capacity_of(self._callable),
                "node_id": rt.node_id.hex if rt is not None and rt.node_id is not None else "",
                "log_file": str(logs.log_path(self._who, self._logging or LoggingConfig(), node_logs_dir()))}

    def _models_changed(self, model_ids: tuple[str, ...], capacity: int) -> None:
        self._models = (model_ids, capacity)
        if self._models_task is None or self._models_task.done():
            self._models_task = asyncio.get_running_loop().create_task(self._report_models())

    async def _report_models(self) -> None:
        """Tell the controller the models held, once they stop changing for MODELS_DEBOUNCE_S."""
        sent, failures = None, 0
        replica_id = ReplicaId(DeploymentId(self._app, self._deployment), self._tag)
        while self._models != sent and failures < _MODELS_ATTEMPTS:
            await asyncio.sleep(MODELS_DEBOUNCE_S * (1 if failures == 0 else 10 * failures))
            report = self._models
            try:
                rt = current_runtime()
                if rt is None:
                    return
                controller = await ServeClient.of(rt).controller()
                await controller.record_models.remote(replica_id, *report)  # type: ignore[misc]
                sent, failures = report, 0
            except Exception as e:  # the controller is away: routers still learn from their own sends
                failures += 1
                log.warning("could not report the models held to the controller (%s: %s)", type(e).__name__, e)

    @actors.unqueued
    async def start_phase(self) -> str:
        """What the start is doing: "constructor", "lifespan", "reconfigure", "health_check", or "" once done."""
        return "" if self._starting is not None and self._starting.done() else self._phase

    async def _start(self) -> None:
        """The user's constructor (awaited if `async def __init__`, else on a thread, where
        blocking runtime calls work), an ingress app's lifespan startup, `reconfigure(user_config)`
        if there is one, then the first `check_health()`: only then is the replica ready."""
        fn_or_cls, init_args, init_kwargs = self._code
        token = current_context.set(self._context)
        try:
            self._callable = fn_or_cls if self._is_function else await _construct(fn_or_cls, init_args, init_kwargs)
        finally:
            current_context.reset(token)
        self._context = ReplicaContext(self._deployment, self._tag, self._app, self._callable)
        set_process_context(self._context)
        self._methods = public_methods(self._callable, self._is_function)
        asgi = None if self._is_function else bind_app(self._callable)
        if asgi is not None:
            self._phase = "lifespan"
            self._lifespan = Lifespan(asgi)
            await self._lifespan.start()
            asgi = self._lifespan.app
        self._asgi = asgi
        if self._user_config_pending is not None:
            self._phase = "reconfigure"
            await self.reconfigure(self._user_config_pending)
            self._user_config_pending = None
        if getattr(self._callable, "check_health", None) is not None:
            self._phase = "health_check"
            try:
                await asyncio.wait_for(self.check_health(), self._health_timeout_s)
            except asyncio.TimeoutError:
                raise TimeoutError(f"the first health check of {self._deployment} did not finish within "
                                   f"health_check_timeout_s={self._health_timeout_s}s") from None
            except Exception as e:
                log.error("%s: the first health check failed: %s: %s", self._id, type(e).__name__, e)
                raise

    @actors.unqueued
    async def set_logging_config(self, logging_config: LoggingConfig | None) -> None:
        """A changed `logging_config`: applied at once, without a restart."""
        self._logging = logging_config
        self._configure_logs(logging_config)

    def _configure_logs(self, logging_config: LoggingConfig | None) -> None:
        self._access = logs.configure(self._who, logging_config, default_dir=node_logs_dir(),
                                      tally=self._tally_batch if self._cells is not None else None)

    async def handle_request(self, method: str, args: tuple, kwargs: dict, ctx: Ctx = NO_REQUEST,
                             stream: bool = False) -> Any:
        await self._slots.acquire()
        self._ongoing += 1
        self._idle.clear()
        streaming = False
        started = time.perf_counter()
        request_token = current_request.set(ctx)
        span = span_token = None
        if tracing.ENABLED:
            span, span_token = tracing.start_current(
                f"replica {self._deployment}.{method}", "SERVER", traceparent=ctx[TRACE],
                attributes={"serve.replica": self._id, "serve.request_id": ctx[RID]})
        result: Any = None
        error: BaseException | None = None
        try:
            result = await self._handle(method, args, kwargs, stream)
            if type(result) is StreamBody:  # counted in flight until the stream ends
                streaming = True
                return self._open_stream(result, stream)
            if type(result) is WebSocketSession:  # counted in flight until its app ends
                streaming = True
                return await self._sockets.open(result)
            return result
        except BaseException as e:
            error = e
            raise
        finally:
            if not streaming:
                self._request_done()
            current_request.reset(request_token)
            if self._cells is not None or self._access is not None or span is not None:
                status = self._observe(method, args, ctx, result, error, started)
                if span is not None:
                    failed = error if isinstance(error, Exception) else None
                    tracing.end(span, span_token, error=failed, status=status if isinstance(status, int) else None)

    def _request_done(self) -> None:
        self._slots.release()
        self._ongoing -= 1
        if self._ongoing == 0:
            self._idle.set()

    @actors.unqueued
    async def reconfigure(self, user_config: Any) -> None:
        if self._callable is None:  # still starting: it runs with the config given at start
            self._user_config_pending = user_config
            return
        fn = getattr(self._callable, "reconfigure", None)
        if fn is None:
            raise AttributeError(f"deployment {self._deployment} got a user_config but has no reconfigure(config) method")
        await _call_off_loop(fn, user_config)

    @actors.unqueued
    async def ping(self) -> None:
        """Answered by the replica's loop at once: routers ask a replica whose requests
        make no progress whether it is alive at all (a frozen process does not answer)."""

    @actors.unqueued
    async def check_health(self) -> bool:
        if self._models is not None and (self._models_task is None or self._models_task.done()):
            self._models_changed(*self._models)  # the controller may be a new one (see the module docstring)
        fn = getattr(self._callable, "check_health", None)
        if fn is not None:
            await _call_off_loop(fn)
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
        if self._lifespan is not None:  # the ingress app's shutdown events
            await self._lifespan.stop(max(1.0, timeout_s - wait_loop_s))
        del_fn = getattr(self._callable, "__del__", None)
        if del_fn is not None and not self._is_function:
            try:
                result = del_fn()
                if inspect.isawaitable(result):
                    await result
            except Exception as e:
                log.warning("%s.__del__ raised during shutdown: %r", self._deployment, e)
        logs.flush(wait_s=logs.LAST_LINES_S)  # the process is killed next
        return self._ongoing



_control: concurrent.futures.ThreadPoolExecutor | None = None


def _control_pool() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for the user's sync start-up and control code (`__init__`, `reconfigure`,
    `check_health`), apart from the pool sync requests run on."""
    global _control
    if _control is None:
        _control = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="replica-control")
    return _control


async def _construct(cls: Any, args: tuple, kwargs: dict) -> Any:
    """An instance of the user's class: `async def __init__` awaited on this loop, a plain
    one run on a thread (the constructor may block on runtime calls: `actors.get`, a handle's
    `.result()`)."""
    if inspect.iscoroutinefunction(getattr(cls, "__init__", None)):
        instance = cls.__new__(cls) if cls.__new__ is object.__new__ else cls.__new__(cls, *args, **kwargs)
        await instance.__init__(*args, **kwargs)
        return instance
    ctx = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(_control_pool(), lambda: ctx.run(cls, *args, **kwargs))


async def _call_off_loop(fn: Any, *args: Any) -> Any:
    """`fn(*args)`: awaited if it is async, else on a control thread (so it may block on
    runtime calls, and never waits behind sync requests filling the default pool)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    ctx = contextvars.copy_context()
    result = await asyncio.get_running_loop().run_in_executor(_control_pool(), lambda: ctx.run(fn, *args))
    if inspect.isawaitable(result):
        result = await result
    return result

