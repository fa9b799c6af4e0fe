"""Routing in every caller: which replica gets a request, and waiting when all are busy.

One `Router` per deployment per process, on the runtime's loop, made by the process's
`ServeClient`. Its replica set comes by long poll from the controller (pushed, not polled
per request; `replica_set.ReplicaSetSubscriber`, which also reports the router's load);
while the controller is away, the last set stays in use.

Choice (`model_routing`): power of two choices over the replicas with room (requests this
caller has in flight there < max_ongoing_requests). With no room anywhere, requests wait
in FIFO order at the caller; past `max_queued_requests` they fail at once with
`BackPressureError`. A deployment scaled to zero has no replica: its requests
wait, and the first to wait reports the load at once, so the controller starts a replica.
A request naming a multiplexed model (`Ctx[MODEL]`) prefers a replica that holds it
(`model_routing.ModelLocator`: power of two choices among holders, else among replicas
with a free model slot, else among all).

A request refused by a replica that was already gone (`ActorUnavailableError`: it never
ran) is retried on another replica; one that was in flight when its replica died fails
(it may have run).

A frozen replica (a stopped process, a loop that never yields) gets no new requests until
it answers a ping again (`replica_watch.StallWatch`, the router's watchdog).

Each request carries its request context (`context.Ctx`) to the replica (an argument of the call). The
router counts requests (`serve_num_router_requests_total`, by the context's route and
application) and, with the same lookup, those a handle made (`serve_handle_request_counter_total`:
a handle call is counted when it reaches its router; a count of its own in the handle had
cost a driver 0.9 us of CPU per call), shows its queue (`serve_deployment_queued_queries`),
and, when tracing is on, makes a span of the queueing and the choice of a replica.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import random
from collections.abc import Callable, Sequence
from typing import Any

from actors import ActorDiedError, ActorHandle, ActorUnavailableError
from actors.system import LongPollClient, PreparedCall

from ..exceptions import BackPressureError, DeploymentUnavailableError, MethodNotFoundError, ServeError
from ..messages import HTTP_METHOD, WEBSOCKET_METHOD, DeploymentId, ReplicaId, ReplicaInfo
from . import counting, model_routing, tracing
from .context import APP, MODEL, NO_REQUEST, ROUTE, TRACE, Ctx
from .model_routing import PowerOfTwoChoices
from .replica_set import ReplicaSetSubscriber, replica_set_key
from .replica_watch import PING_TIMEOUT_S, STALL_S, StallWatch
from .serve_metrics import caller_metrics

__all__ = ["POLL_HOLD_S", "Router", "replica_set_key"]

POLL_HOLD_S = 60.0  # an idle long poll renews this often: a call on the controller per router (4 proxies x 200 deployments at 20 s were most of its steady CPU)
# The proxy's entries: every replica answers HTTP; only an ASGI ingress (`@serve.ingress`)
# reports WEBSOCKET_METHOD among its methods and takes websockets.
_PROXY_METHODS = (HTTP_METHOD, WEBSOCKET_METHOD)
_ATTEMPTS = 3  # a request refused by gone replicas is tried on at most this many


def _send(replica: ReplicaInfo, method: str, args: tuple, kwargs: dict, ctx: Ctx,
          prepared: PreparedCall | None, stream: bool = False) -> Any:
    """One request to one replica: its arguments as the caller serialized them, if it did
    (`stream=True` included in them for a streaming call)."""
    if prepared is not None:
        return replica.handle.handle_request.remote_prepared(prepared)
    if stream:
        return replica.handle.handle_request.remote(method, args, kwargs, ctx, True)
    return replica.handle.handle_request.remote(method, args, kwargs, ctx)


class Router(ReplicaSetSubscriber, StallWatch):
    def __init__(self, deployment: DeploymentId, controller: ActorHandle, rng: random.Random | None = None, *,
                 handle_id: str = "", actor_id: str = "", stall_s: float = STALL_S,
                 ping_timeout_s: float = PING_TIMEOUT_S) -> None:
        self.deployment = deployment
        self.handle_id = handle_id
        self.actor_id = actor_id
        # (route, application) -> its (router, handle) count cells; the last used, at hand.
        self._counts: dict[tuple[str, str], tuple[Any, Any]] | None = None
        self._last_count: tuple[str, str, Any, Any] = ("", "", None, None)
        if counting.ENABLED:
            self._counts = {}
            caller_metrics().queued.add_source(self)
        self._controller = controller
        self._policy = PowerOfTwoChoices(rng)
        self._models = model_routing.ModelLocator() if model_routing.ENABLED else None
        self._replicas: tuple[ReplicaInfo, ...] = ()
        self._max_queued = -1
        self._methods: frozenset[str] | None = None  # what may be called (None: not known yet)
        self._in_flight: dict[ReplicaId, int] = collections.defaultdict(int)
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._handoffs = 0  # woken waiters that have not taken their slot yet
        self._have_set = asyncio.Event()
        self._missing = False
        self._unavailable = ""
        self._report_every: float | None = None
        self._source = f"{id(self):x}@{controller!r}"
        key = replica_set_key(deployment)
        self._poll = LongPollClient(lambda version: controller.listen.remote(key, version, POLL_HOLD_S), self.apply,
                                    name=f"replica set of {deployment}").start()
        self._reporter = asyncio.get_running_loop().create_task(self._report())
        # Frozen replicas (see _watch): when each replica last answered, and those set aside.
        self._loop = asyncio.get_running_loop()
        self._stall_s, self._ping_timeout_s = stall_s, ping_timeout_s
        self._progress: dict[ReplicaId, float] = {}
        self._frozen: set[ReplicaId] = set()
        self._pinging: set[ReplicaId] = set()
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    # -- metrics -------------------------------------------------------------------------
    def _count(self, ctx: Ctx, handle: bool) -> None:
        """Count a request (`handle`: a handle's call, not the proxy's)."""
        route, app, routed, handled = self._last_count
        if ctx[ROUTE] != route or ctx[APP] != app or routed is None or (handle and handled is None):
            if self._counts is None:
                return
            routed, handled = self._count_cells(ctx[ROUTE], ctx[APP], handle)
        routed.value += 1
        if handle:
            handled.value += 1

    def _count_cells(self, route: str, app: str, handle: bool) -> tuple[Any, Any]:
        """The (router, handle) count cells of a route and application; the handle's is
        made at the first handle call (the proxy's routers have none)."""
        assert self._counts is not None
        metrics, name = caller_metrics(), self.deployment.name
        routed, handled = self._counts.get((route, app)) or (None, None)
        if routed is None:
            routed = metrics.router_requests.cell(name, route, app, self.handle_id, self.actor_id)
        if handled is None and handle:
            handled = metrics.handle_requests.cell(self.handle_id, name, route, app)
        self._counts[(route, app)] = (routed, handled)
        self._last_count = (route, app, routed, handled)
        return routed, handled

    def metric_rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        """serve_deployment_queued_queries, read at scrape time."""
        return [((self.deployment.name, self.deployment.app, self.handle_id, self.actor_id), float(len(self._waiting)))]

    def _wake(self, n: int = 1) -> None:
        while n > 0 and self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                self._handoffs += 1
                n -= 1

    def _has_room(self) -> bool:
        return any(self._in_flight.get(r.replica_id, 0) < r.max_ongoing_requests for r in self._routable())

    def _routable(self) -> Sequence[ReplicaInfo]:
        """The replicas new requests may go to: all but those set aside as frozen."""
        if not self._frozen:
            return self._replicas
        return [r for r in self._replicas if r.replica_id not in self._frozen]

    def _check_method(self, method: str) -> None:
        """Fail a call of a method the deployment's replicas said they do not have (a
        websocket handshake to a deployment that is not an ASGI ingress too)."""
        methods = self._methods
        if methods is None or method in methods or method == HTTP_METHOD:
            return
        if method == WEBSOCKET_METHOD:
            raise MethodNotFoundError(f"deployment {self.deployment.name!r} takes no websockets: they reach the "
                                      "@app.websocket routes of a @serve.ingress app")
        raise MethodNotFoundError.of(self.deployment.name, method, sorted(m for m in methods if m not in _PROXY_METHODS))

    def _choose(self, model: str) -> ReplicaInfo | None:
        if model and self._models is not None:
            return self._models.choose(self._policy, self._routable(), self._in_flight, model)
        return self._policy.choose(self._routable(), self._in_flight)

    async def _acquire(self, method: str = HTTP_METHOD, model: str = "") -> ReplicaInfo:
        """A replica with room, in FIFO order: requests already waiting (or woken and
        about to run) go before a new arrival."""
        if not self._have_set.is_set():
            await self._have_set.wait()
        self._check_method(method)
        arriving = True
        while True:
            if self._unavailable and not self._replicas:
                raise self._unavailable_error()
            if self._missing:
                raise ServeError(f"there is no deployment {self.deployment.name!r} in application "
                                 f"{self.deployment.app!r} (see serve.status())")
            ahead = arriving and (self._waiting or self._handoffs)
            replica = None if ahead else self._choose(model)
            if replica is not None:
                self._in_flight[replica.replica_id] += 1
                if self._waiting and self._has_room():
                    self._wake()  # room for the next one too: hand it on
                return replica
            if arriving and 0 <= self._max_queued <= len(self._waiting):
                raise BackPressureError(num_queued_requests=len(self._waiting), max_queued_requests=self._max_queued)
            fut = asyncio.get_running_loop().create_future()
            if arriving:
                self._waiting.append(fut)
                if not self._replicas and self._report_every is not None:
                    self._report_now()  # scaled to zero: the controller hears of this request at once
            else:
                self._waiting.appendleft(fut)  # woken but no room after all: keep its place
            arriving = False
            try:
                await fut
            except asyncio.CancelledError:
                if not fut.done() or fut.cancelled():
                    if fut in self._waiting:
                        self._waiting.remove(fut)  # a cancelled call gives its place up
                else:
                    self._handoffs -= 1
                    self._wake()  # it was handed a slot: pass it on
                raise
            self._handoffs -= 1

    def _unavailable_error(self) -> DeploymentUnavailableError:
        return DeploymentUnavailableError(f"deployment {self.deployment.name!r} of application "
                                          f"{self.deployment.app!r} is unavailable: {self._unavailable}")

    def _release(self, replica: ReplicaInfo) -> None:
        self._in_flight[replica.replica_id] -= 1
        self._progress[replica.replica_id] = self._loop.time()
        self._wake()

    def send(self, method: str, args: tuple, kwargs: dict, deliver: Callable[[asyncio.Future], Any],
             ctx: Ctx = NO_REQUEST, prepared: PreparedCall | None = None) -> asyncio.Future:
        """Route one handle call; `deliver(future)` gets its finished outcome (on this loop).
        Returns the future to cancel to abandon the request.

        The common case costs no task: a replica with room is chosen at once, the call
        goes out, and its reply future is delivered when it lands. Anything else (no
        replica set yet, callers waiting, a retry) goes through `call` on a task."""
        self._count(ctx, True)
        replica = None
        if self._have_set.is_set() and not self._missing and not self._waiting and not self._handoffs:
            try:
                self._check_method(method)
            except MethodNotFoundError as e:
                failed = asyncio.get_running_loop().create_future()
                failed.set_exception(e)
                deliver(failed)
                return failed
            replica = self._choose(ctx[MODEL])
        if replica is None:
            task = asyncio.get_running_loop().create_task(self._route_value(method, args, kwargs, ctx, prepared))
            task.add_done_callback(deliver)
            return task
        if tracing.ENABLED:
            tracing.end(tracing.start(f"route {self.deployment.name}", traceparent=ctx[TRACE],
                                      attributes={"serve.replica": str(replica.replica_id), "serve.queued": False}))
        self._in_flight[replica.replica_id] += 1
        try:
            reply = _send(replica, method, args, kwargs, ctx, prepared).future()
        except BaseException:
            self._release(replica)
            raise
        reply.add_done_callback(functools.partial(self._sent, replica, method, args, kwargs, ctx, prepared, deliver))
        return reply

    def _sent(self, replica: ReplicaInfo, method: str, args: tuple, kwargs: dict, ctx: Ctx,
              prepared: PreparedCall | None, deliver: Callable[[asyncio.Future], Any], reply: asyncio.Future) -> None:
        self._release(replica)
        error = None if reply.cancelled() else reply.exception()
        if isinstance(error, ActorDiedError):
            self._drop(replica)  # as call_holding: forget it now, whether or not the call ran
            if isinstance(error, ActorUnavailableError):  # it never ran: try another replica
                retry = asyncio.get_running_loop().create_task(self._route_value(method, args, kwargs, ctx, prepared))
                retry.add_done_callback(deliver)
                return
        deliver(reply)

    def _drop(self, replica: ReplicaInfo) -> None:
        """Forget a dead replica until the controller says otherwise."""
        self._replicas = tuple(r for r in self._replicas if r.replica_id != replica.replica_id)

    async def call(self, method: str, args: tuple, kwargs: dict, ctx: Ctx = NO_REQUEST,
                   prepared: PreparedCall | None = None) -> Any:
        """Route one handle call and return its result."""
        self._count(ctx, True)
        return (await self._route(method, args, kwargs, None, ctx, prepared))[0]

    async def call_holding(self, method: str, args: tuple, kwargs: dict, hold: Callable[[Any], bool] | None,
                           ctx: Ctx = NO_REQUEST, stream: bool = False,
                           prepared: PreparedCall | None = None, handle: bool = False
                           ) -> tuple[Any, ReplicaInfo | None]:
        """Route one request; returns (result, replica). If `hold(result)`, the request
        stays counted in flight on that replica until `release(replica)` (a response
        streamed from it after this call returns); otherwise replica is None.
        `stream`: a handle call with `stream=True` (the replica answers with a stream start);
        `prepared`: the call as its caller serialized it (then `stream=True` is in it);
        `handle`: a handle's call (the proxy's are not)."""
        self._count(ctx, handle)
        return await self._route(method, args, kwargs, hold, ctx, prepared, stream)

    async def _route_value(self, method: str, args: tuple, kwargs: dict, ctx: Ctx,
                           prepared: PreparedCall | None = None) -> Any:
        return (await self._route(method, args, kwargs, None, ctx, prepared))[0]

    async def _acquire_traced(self, ctx: Ctx, method: str) -> ReplicaInfo:
        span = tracing.start(f"route {self.deployment.name}", traceparent=ctx[TRACE],
                             attributes={"serve.queued": bool(self._waiting or self._handoffs)})
        try:
            replica = await self._acquire(method, ctx[MODEL])
        except BaseException as e:
            tracing.end(span, error=e if isinstance(e, Exception) else None)
            raise
        span.set_attribute("serve.replica", str(replica.replica_id))
        tracing.end(span)
        return replica

    async def _route(self, method: str, args: tuple, kwargs: dict, hold: Callable[[Any], bool] | None,
                     ctx: Ctx, prepared: PreparedCall | None = None,
                     stream: bool = False) -> tuple[Any, ReplicaInfo | None]:
        for attempt in range(_ATTEMPTS):
            replica = await (self._acquire_traced(ctx, method) if tracing.ENABLED else self._acquire(method, ctx[MODEL]))
            held = False
            try:
                result = await _send(replica, method, args, kwargs, ctx, prepared, stream)
                held = hold is not None and hold(result)
                return result, (replica if held else None)
            except ActorDiedError as e:
                # The replica died: drop it locally; a call it never received is retried
                # on another replica.
                self._drop(replica)
                if not isinstance(e, ActorUnavailableError) or attempt == _ATTEMPTS - 1:
                    raise
            finally:
                if not held:
                    self._release(replica)
        raise AssertionError("unreachable")

    def release(self, replica: ReplicaInfo) -> None:
        """End a request `call_holding` kept in flight."""
        self._release(replica)

    def close(self) -> None:
        self._poll.close()
        self._reporter.cancel()
        self._watchdog.cancel()
