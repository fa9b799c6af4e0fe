"""The per-process runtime: one event loop, one transport, calls out and requests in.

A `Runtime` owns the process's sockets (via `Transport`), the table of calls waiting for
replies (per peer, so a dead peer's calls fail together) and the table of local targets
that answer requests (the hosted actor, a cluster service, the runtime's own endpoints).

Invariants:
- every pending call ends: with its reply, with the peer's death (`fail_peer`), or with
  the runtime's shutdown, which fails all of them;
- a call whose future is cancelled (the caller stopped waiting: a timeout, a cancelled
  task, `ObjectRef.cancel()`) is cancelled at the callee too: a CANCEL message goes to
  it, and an async actor method running there gets `CancelledError`;
- all of this runs on `self.loop`; other threads enter through `run_threadsafe`.

What the process knows about itself and the cluster is in typed attributes: `head` (the
head's client), `directory` (where actors answer), `exports` (refs lent out), and
`job_id`, `namespace`, `actor_id`, `node_id` (set by the driver's or worker's start-up).
Higher layers keep their per-process singletons with `attachment(cls, make)`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import itertools
import logging
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from ._directory import ActorDirectory
from ._errors import decode_error, encode_error
from ._exports import Exports
from ._futures import CallFuture
from ._head_client import HeadClient
from ._metrics_runtime import COUNTERS
from ._metrics_runtime import install as install_runtime_metrics
from ._security import CurveKeys
from ._serialization import dumps, loads
from ._transport import Transport
from ._wire import Kind, Message
from .exceptions import (
    ActorDiedError,
    ActorsError,
    ActorUnavailableError,
    ClusterUnavailableError,
    RuntimeShutDownError,
)
from .messages import ActorId, JobId, NodeId

__all__ = ["Runtime", "Target", "Inbound", "DEFAULT_MAX_MESSAGE_BYTES"]

log = logging.getLogger(__name__)
DEFAULT_MAX_MESSAGE_BYTES = int(os.environ.get("ZEROSERVE_MAX_MESSAGE_BYTES", str(1 << 30)))
_EMPTY_ARGS: tuple[tuple[Any, ...], dict[str, Any] | None] = ((), None)
T = TypeVar("T")


class Inbound:
    """One request received by this process, with the means to answer it once."""

    __slots__ = ("buffers", "identity", "method", "oneway", "payload", "req_id", "runtime")

    def __init__(self, runtime: "Runtime", identity: bytes, msg: Message, method: str) -> None:
        self.runtime = runtime
        self.identity = identity
        self.req_id = msg.req_id
        self.method = method
        self.payload = msg.payload
        self.buffers = msg.buffers
        self.oneway = msg.kind == Kind.ONEWAY

    def args(self) -> tuple[tuple[Any, ...], dict[str, Any] | None]:
        if not len(self.payload):
            return _EMPTY_ARGS
        return loads(self.payload, self.buffers)

    def reply(self, value: Any) -> None:
        if self.oneway:
            return
        try:
            payload, buffers = dumps(value) if value is not None else (b"", ())
        except Exception as e:  # unpicklable result: the caller gets a clear error
            self.fail(TypeError(f"the result of {self.method!r} could not be serialized: {e!r}"))
            return
        self.runtime.transport.reply(self.identity, Message(Kind.REPLY, self.req_id, b"", payload, buffers))

    def fail(self, exc: BaseException) -> None:
        if self.oneway:
            log.error("one-way %s failed: %r", self.method, exc, exc_info=exc)
            return
        payload, buffers = encode_error(exc)
        self.runtime.transport.reply(self.identity, Message(Kind.ERROR, self.req_id, b"", payload, buffers))


class Target(Protocol):
    """Something that answers requests routed to it by name."""

    def handle(self, call: Inbound) -> None: ...

    def cancel(self, identity: bytes, req_id: int) -> None: ...


class Runtime:
    """Calls out, requests in, for one process. Create on the loop that will run it.

    Its socket binds `node_ip`; `address` (what other processes are told to call) uses
    `advertise` instead when given: an IP or DNS name that reaches the bind address from
    elsewhere (a pod binds 0.0.0.0 and is reached at its pod IP)."""

    def __init__(
        self,
        *,
        token: str,
        node_ip: str,
        head_address: str | None,
        role: str,
        port: int = 0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        advertise: str | None = None,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.thread_id = threading.get_ident()
        self.token = token
        self.keys = CurveKeys.from_token(token)
        self.node_ip = node_ip
        self.head_address = head_address
        self.role = role
        self.transport = Transport(
            self.loop, self.keys, node_ip, self._on_request, self._on_reply, max_message_bytes, port,
            on_undeliverable=self._on_undeliverable, on_lost=self._on_lost, advertise=advertise,
        )
        self.address = self.transport.address
        self._ids = itertools.count(1)
        self._pending: dict[str, dict[int, CallFuture]] = {}
        self._targets: dict[bytes, Target] = {}
        self._closed = False
        self._cluster_gone: str | None = None  # why every call fails at once (see `cluster_gone`)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.head = HeadClient(self._call_head)
        self.directory = ActorDirectory(self)
        self.exports = Exports(self.loop, self.address)
        self.job_id: JobId | None = None  # the driver's job, or the job that created this worker's actor
        self.namespace: str | None = None
        self.actor_id: ActorId | None = None  # in a worker: the actor it hosts
        self.node_id: NodeId | None = None  # in a worker: its node
        self.gpu_ids: tuple[str, ...] = ()  # in a worker: the GPU devices its actor holds
        self._attachments: dict[type, Any] = {}
        self._counters = COUNTERS
        install_runtime_metrics()

    # -- attachments of higher layers ----------------------------------------------------
    def attachment(self, cls: type[T], make: Callable[[], T] | None = None) -> T:
        """This runtime's one instance of `cls` (a class of the layer that asks), made by
        `make()` (default `cls()`) the first time. Key by a class you own."""
        obj = self._attachments.get(cls)
        if obj is None:
            obj = make() if make is not None else cls()
            if not isinstance(obj, cls):
                raise TypeError(f"attachment({cls.__name__}) was made as {type(obj).__name__}")
            self._attachments[cls] = obj
        return obj

    def attached(self, cls: type[T]) -> T | None:
        """This runtime's instance of `cls` if there is one (None: nothing is made)."""
        obj = self._attachments.get(cls)
        return obj if obj is None or isinstance(obj, cls) else None

    def detach(self, cls: type[T]) -> T | None:
        """Forget this runtime's instance of `cls`, returning it (to close it) if there was one."""
        return self._attachments.pop(cls, None)

    # -- targets -----------------------------------------------------------------------
    def register(self, name: str, target: Target) -> None:
        self._targets[name.encode()] = target

    def unregister(self, name: str) -> None:
        self._targets.pop(name.encode(), None)

    def _on_request(self, identity: bytes, msg: Message) -> None:
        name, _, method = msg.route.partition(b"/")
        target = self._targets.get(name)
        if msg.kind == Kind.CANCEL:
            if target is not None:
                target.cancel(identity, msg.req_id)
            return
        if name == b"a":
            self._counters.actor_calls_received += 1
        else:
            self._counters.system_calls_received += 1
        call = Inbound(self, identity, msg, method.decode())
        if target is None:
            call.fail(ActorsError(f"no target {name.decode()!r} in this process ({self.role} at {self.address})"))
            return
        try:
            target.handle(call)
        except Exception as e:
            call.fail(e)

    # -- calls out ---------------------------------------------------------------------
    def call(self, address: str, route: bytes, args: tuple[Any, ...] = (),
             kwargs: dict[str, Any] | None = None) -> asyncio.Future[Any]:
        """Send a request; return a future for its reply. Loop thread only."""
        payload, buffers = dumps((args, kwargs)) if (args or kwargs) else (b"", ())
        fut = self.loop.create_future()
        self._counters.system_calls_sent += 1
        self.send_request(address, route, payload, buffers, fut)
        return fut

    def send_request(self, address: str, route: bytes, payload: bytes, buffers: Any, fut: CallFuture) -> int:
        if self._closed:
            fut.set_exception(RuntimeShutDownError("the runtime of this process is shut down"))
            return 0
        if self._cluster_gone is not None:
            fut.set_exception(ClusterUnavailableError(self._cluster_gone))
            return 0
        req_id = next(self._ids)
        try:
            self.transport.send(address, Message(Kind.REQUEST, req_id, route, payload, buffers))
        except Exception as e:
            fut.set_exception(e)
            return 0
        self._pending.setdefault(address, {})[req_id] = fut
        fut.add_done_callback(functools.partial(self._call_ended, address, route, req_id))
        return req_id

    def _call_ended(self, address: str, route: bytes, req_id: int, fut: Any) -> None:
        """A done callback of every call sent: a cancelled one is cancelled at the callee.
        (Runs on the loop, or in the thread that cancelled a thread-made future.)"""
        if not fut.cancelled():
            return
        if self.in_loop_thread():
            self._send_cancel(address, route, req_id)
        elif not self._closed:
            try:
                self.loop.call_soon_threadsafe(self._send_cancel, address, route, req_id)
            except RuntimeError:
                pass  # the loop is closed: nothing runs there any more

    def _send_cancel(self, address: str, route: bytes, req_id: int) -> None:
        pending = self._pending.get(address)
        if pending is None or pending.pop(req_id, None) is None or self._closed:
            return  # answered, or its peer is gone already
        try:
            self.send_cancel(address, route, req_id)
        except Exception as e:  # best effort: the callee may be gone
            log.debug("could not send a cancel to %s: %r", address, e)

    def send_oneway(self, address: str, route: bytes, args: tuple[Any, ...] = ()) -> None:
        payload, buffers = dumps((args, None))
        self._counters.system_calls_sent += 1
        self.transport.send(address, Message(Kind.ONEWAY, 0, route, payload, buffers))

    def send_cancel(self, address: str, route: bytes, req_id: int) -> None:
        self.transport.send(address, Message(Kind.CANCEL, req_id, route, b""))

    def _on_reply(self, address: str, msg: Message) -> None:
        pending = self._pending.get(address)
        fut = pending.pop(msg.req_id, None) if pending else None
        if fut is None or fut.done():
            return
        try:
            if msg.kind == Kind.REPLY:
                fut.set_result(loads(msg.payload, msg.buffers) if len(msg.payload) else None)
            else:
                fut.set_exception(decode_error(msg.payload, msg.buffers))
        except Exception as e:  # a reply we cannot decode still ends the call
            fut.set_exception(ActorsError(f"could not decode the reply from {address}: {e!r}"))

    def _on_undeliverable(self, address: str, messages: list[Message], exc: Exception) -> None:
        """Requests the transport could not hand to ZeroMQ: they never left this process."""
        pending = self._pending.get(address, {})
        to_actor = self.directory.is_actor_address(address)
        for msg in messages:
            fut = pending.pop(msg.req_id, None) if msg.kind == Kind.REQUEST else None
            if fut is not None and not fut.done():
                if to_actor:
                    fut.set_exception(ActorUnavailableError(
                        f"could not send the call to the actor's process at {address} ({exc}); it was not sent"))
                else:
                    fut.set_exception(ConnectionError(f"could not send to {address}: {exc}"))

    def _on_lost(self, address: str) -> None:
        """The connection to `address` dropped: fail what was in flight to it."""
        if address == self.head_address:
            self.fail_peer(address, lambda: ClusterUnavailableError(f"lost the connection to the head at {address}"),
                           close=False)
            return
        if self.directory.is_actor_address(address):
            self.directory.peer_lost(address)
            make: Callable[[], BaseException] = lambda: ActorDiedError(  # noqa: E731
                f"lost the connection to the actor's process at {address}: it died or is unreachable")
        else:
            make = lambda: ConnectionError(f"lost the connection to {address}")  # noqa: E731
        self.fail_peer(address, make, close=False)

    def cluster_gone(self, reason: str) -> None:
        """This process's cluster is gone for good (a driver's embedded head or agent
        exited): fail every call in flight and every later one at once with
        `ClusterUnavailableError(reason)`, instead of each waiting for its time-out (a
        driver's shutdown after Ctrl-C would otherwise wait on every step). Loop thread."""
        if self._cluster_gone is not None:
            return
        self._cluster_gone = reason
        for address in list(self._pending):
            self.fail_peer(address, lambda: ClusterUnavailableError(reason), close=False)

    def fail_peer(self, address: str, make_exc: Callable[[], BaseException], close: bool = True, *,
                  make_unsent: Callable[[], BaseException] | None = None) -> int:
        """Fail every call waiting on `address`; forget the peer. Returns how many failed.
        With `make_unsent`, that is their error if none of them can have reached the peer
        (its connection never completed a handshake: they are all still queued here)."""
        if make_unsent is not None and not self.transport.reached(address):
            make_exc = make_unsent
        pending = self._pending.pop(address, {})
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(make_exc())
        if close:
            self.transport.close_peer(address)
        return len(pending)

    async def call_service(
        self, address: str, service: str, method: str, *args: Any, timeout: float | None = 30.0
    ) -> Any:
        """Call a cluster service (head, agent); a silent service fails after `timeout`."""
        fut = self.call(address, f"{service}/{method}".encode(), args)
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            # The service may be down or restarting: forget the connection so the next
            # call reconnects cleanly, and say what was unreachable.
            self.fail_peer(address, lambda: ClusterUnavailableError(f"{service} at {address} did not answer"))
            raise ClusterUnavailableError(
                f"the {service} at {address} did not answer {method} within {timeout}s"
            ) from None

    async def _call_head(self, method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        """The transport of `self.head` (a `HeadClient`): one call to the head service."""
        if not self.head_address:
            raise ClusterUnavailableError("this process does not know the head's address")
        return await self.call_service(self.head_address, "head", method, *args, timeout=timeout)

    def background(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run a coroutine as a task this runtime keeps alive until it ends."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- threads -----------------------------------------------------------------------
    def in_loop_thread(self) -> bool:
        return threading.get_ident() == self.thread_id

    def run_threadsafe(self, fn: Callable[[], Coroutine[Any, Any, T]], timeout: float | None = None) -> T:
        """Run a coroutine function on the loop from another thread and wait for it."""
        if self.in_loop_thread():
            raise RuntimeError(
                "a blocking runtime call was made on the runtime's own event loop thread; "
                "inside async code use `await` instead of a blocking call"
            )
        cf: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return cf.result(timeout)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self, linger_s: float = 0.0) -> None:
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for address in list(self._pending):
            self.fail_peer(address, lambda: RuntimeShutDownError("the runtime of this process is shut down"), close=False)
        self.transport.close(linger_s)
