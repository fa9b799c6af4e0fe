"""Hosting one actor instance: runs its methods, at most `max_concurrency` at a time.

Async methods run as tasks on the worker's loop; sync methods run in a thread pool so
they never block the loop. Calls beyond the limit wait in FIFO order, except calls of
methods marked `@actors.unqueued` (quick control methods that must not wait behind the
work they control), which start at once. Top-level
ObjectRef arguments are resolved before the method runs. A user exception is sent back
whole (type, message, traceback); the actor keeps serving.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import queue
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

from ._refs import ObjectRef
from ._runtime import Inbound

__all__ = ["ActorHost", "ServiceTarget", "rpc", "rpc_methods", "unqueued"]

log = logging.getLogger(__name__)
_MAX_SYNC_THREADS = 64


def unqueued(fn: Any) -> Any:
    """Mark an actor method to start at once even when `max_concurrency` calls already run
    (for quick control methods: a stream's next chunk, a stop signal). It still counts
    while it runs. Meant for async methods: a sync one still needs a free method thread."""
    fn.__actors_unqueued__ = True
    return fn


def _unqueued_methods(cls: type) -> frozenset[str]:
    return frozenset(name for name in dir(cls) if getattr(getattr(cls, name, None), "__actors_unqueued__", False))


async def _resolve_refs(args: tuple, kwargs: dict | None) -> tuple[tuple, dict]:
    if any(type(a) is ObjectRef for a in args):
        args = tuple([(await a) if type(a) is ObjectRef else a for a in args])
    if kwargs and any(type(v) is ObjectRef for v in kwargs.values()):
        kwargs = {k: ((await v) if type(v) is ObjectRef else v) for k, v in kwargs.items()}
    return args, kwargs or {}


class ActorHost:
    """The `a` target of a worker process."""

    def __init__(self, instance: Any, max_concurrency: int, async_methods: tuple[str, ...]) -> None:
        self.instance = instance
        self._loop = asyncio.get_running_loop()
        self._limit = max_concurrency
        # With only sync methods, the runner's threads (max_concurrency of them) are the
        # limit: calls queue straight to them and run back to back, with no loop round
        # trip between two calls. Mixed actors share one count across both kinds.
        self._threads_limit = not async_methods and max_concurrency <= _MAX_SYNC_THREADS
        self._async = frozenset(async_methods)
        self._running = 0
        self._waiting: collections.deque[Inbound] = collections.deque()
        self._tasks: dict[tuple[bytes, int], asyncio.Task] = {}
        self._sync = _SyncRunner(self._loop, min(max_concurrency, _MAX_SYNC_THREADS), self._sync_done)
        self._fns: dict[str, Any] = {}
        self._unqueued = _unqueued_methods(type(instance))
        self._work = 0  # calls running of methods not marked unqueued (what a drain waits for)
        self._idle: asyncio.Event | None = None  # made by `drain`, set when `_work` reaches 0
        self.drained = False  # a drain ran: the replies it waited for should still leave

    def handle(self, call: Inbound) -> None:
        if call.method == "__zs_ready__":
            call.reply(True)
            return
        if self._running >= self._limit and not self._threads_limit and call.method not in self._unqueued:
            self._waiting.append(call)
            return
        self._start(call)

    def cancel(self, identity: bytes, req_id: int) -> None:
        task = self._tasks.get((identity, req_id))
        if task is not None:
            task.cancel()
            return
        for call in self._waiting:
            if call.identity == identity and call.req_id == req_id:
                self._waiting.remove(call)
                call.fail(asyncio.CancelledError("the caller cancelled this call"))
                return

    def _method(self, name: str) -> Any:
        fn = self._fns.get(name)
        if fn is None:
            if name.startswith("_") and name != "__call__":
                raise AttributeError(f"{type(self.instance).__name__}.{name} is private and cannot be called remotely")
            fn = getattr(self.instance, name, None)
            if fn is None or not callable(fn):
                raise AttributeError(f"actor {type(self.instance).__name__} has no method {name!r}")
            self._fns[name] = fn
        return fn

    def _start(self, call: Inbound) -> None:
        self._running += 1
        if call.method not in self._unqueued:
            self._work += 1
        try:
            fn = self._method(call.method)
            args, kwargs = call.args()
        except Exception as e:
            call.fail(e)
            self._finished(call)
            return
        has_refs = any(type(a) is ObjectRef for a in args) or bool(
            kwargs and any(type(v) is ObjectRef for v in kwargs.values()))
        if call.method in self._async or has_refs:
            key = (call.identity, call.req_id)
            task = self._loop.create_task(self._run_async(call, fn, args, kwargs, key, has_refs))
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._cancelled_unstarted, call, key))
            return
        self._sync.submit(call, fn, args, kwargs or {})

    async def _run_async(self, call: Inbound, fn: Any, args: tuple, kwargs: dict | None, key: tuple,
                         has_refs: bool) -> None:
        try:
            if has_refs:
                args, kwargs = await _resolve_refs(args, kwargs)
            kw = kwargs or {}
            if call.method not in self._async:
                # A sync method whose ref arguments are now resolved: it runs on the
                # method threads like every sync call, which reply and finish it.
                self._tasks.pop(key, None)
                self._sync.submit(call, fn, args, kw)
                return
            result = fn(*args, **kw)
            if type(result) is types.CoroutineType:
                result = await result
            elif inspect.isasyncgen(result):
                result = [item async for item in result]
            else:
                result = await result
        except asyncio.CancelledError:
            call.fail(asyncio.CancelledError(f"{call.method} was cancelled"))
        except BaseException as e:
            call.fail(e)
        else:
            call.reply(result)
        self._tasks.pop(key, None)
        self._finished(call)

    def _cancelled_unstarted(self, call: Inbound, key: tuple, task: asyncio.Task) -> None:
        """A task cancelled before its first step never runs its coroutine (its `except` and
        cleanup included): answer the call and free its slot here. (A caller that cancels
        right after calling, as a proxy does when its client hangs up, lands here; leaked,
        each such call held one of the `max_concurrency` slots for good.)"""
        if task.cancelled():  # `_run_async` catches everything once it runs: it never ends cancelled
            self._tasks.pop(key, None)
            call.fail(asyncio.CancelledError(f"{call.method} was cancelled"))
            self._finished(call)

    def _sync_done(self, call: Inbound, result: Any, exc: BaseException | None) -> None:
        if exc is not None:
            call.fail(exc)
        else:
            call.reply(result)
        self._finished(call)

    def _finished(self, call: Inbound) -> None:
        self._running -= 1
        if call.method not in self._unqueued:
            self._work -= 1
            if self._work == 0 and not self._waiting and self._idle is not None:
                self._idle.set()
        while self._waiting and self._running < self._limit:
            self._start(self._waiting.popleft())

    async def drain(self, timeout_s: float) -> None:
        """Let the work in flight finish, within `timeout_s` (a node stopping gracefully).

        The instance's own `__actors_drain__(timeout_s)`, if it has one (sync or async),
        says what draining means for it (Serve's proxy stops accepting connections and
        finishes its requests; a replica finishes its requests). Without one, the calls
        running or queued finish, except those of `@unqueued` methods (control calls,
        long polls), which would hold the drain for nothing."""
        self.drained = True
        deadline = self._loop.time() + timeout_s
        hook = getattr(self.instance, "__actors_drain__", None)
        if hook is not None:
            try:
                result = hook(timeout_s)
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, timeout_s)
            except asyncio.TimeoutError:
                log.warning("%s.__actors_drain__ did not finish within %.1fs", type(self.instance).__name__, timeout_s)
            except Exception:
                log.exception("%s.__actors_drain__ raised", type(self.instance).__name__)
            return
        if self._work == 0 and not self._waiting:
            return
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - self._loop.time()))
        except asyncio.TimeoutError:
            log.warning("%d calls still ran at the end of the drain", self._work + len(self._waiting))

    def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        self._sync.close()


class _SyncRunner:
    """Threads that run sync methods: fed by a queue, reporting back with one
    `call_soon_threadsafe` each. Threads start on demand, up to `size`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, done: Any) -> None:
        self._loop = loop
        self._size = size
        self._done = done
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy = 0  # calls submitted and not yet reported (loop thread only)

    def submit(self, call: Inbound, fn: Any, args: tuple, kwargs: dict) -> None:
        self._busy += 1
        if self._busy > len(self._threads) and len(self._threads) < self._size:
            t = threading.Thread(target=self._work, name=f"actor-method-{len(self._threads)}", daemon=True)
            self._threads.append(t)
            t.start()
        self._queue.put((call, fn, args, kwargs))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            call, fn, args, kwargs = item
            try:
                result, exc = fn(*args, **kwargs), None
            except BaseException as e:
                result, exc = None, e
            try:
                self._loop.call_soon_threadsafe(self._report, call, result, exc)
            except RuntimeError:
                return  # the loop is closed: the process is exiting

    def _report(self, call: Inbound, result: Any, exc: BaseException | None) -> None:
        self._busy -= 1
        self._done(call, result, exc)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)


F = TypeVar("F", bound=Callable[..., Any])
_RPC = "__zs_rpc__"


def rpc(fn: F) -> F:
    """Mark a method of a service class (head, agent, runtime endpoints) as callable
    remotely through `ServiceTarget`; its other methods are not reachable."""
    setattr(fn, _RPC, True)
    return fn


def rpc_methods(cls: type) -> frozenset[str]:
    """The names of the methods of `cls` marked `@rpc`."""
    return frozenset(name for name in dir(cls)
                     if not name.startswith("_") and getattr(getattr(cls, name, None), _RPC, False))


class ServiceTarget:
    """Answers requests by calling `obj.<method>(*args, **kwargs)`, awaiting coroutines.

    For system services (head, agent, the runtime's own endpoints): their methods are
    async or quick, so they run on the loop. Only methods marked `@rpc` are reachable.
    """

    def __init__(self, obj: Any) -> None:
        self._obj = obj
        self._methods = rpc_methods(type(obj))
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Future[Any]] = set()

    def handle(self, call: Inbound) -> None:
        if call.method not in self._methods:
            what = "is not callable remotely" if hasattr(self._obj, call.method) else "does not exist"
            call.fail(AttributeError(f"{type(self._obj).__name__}.{call.method} {what}"))
            return
        fn = getattr(self._obj, call.method)
        args, kwargs = call.args()
        result = fn(*args, **(kwargs or {}))
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result, loop=self._loop)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda t: _reply_from_task(call, t))
        else:
            call.reply(result)

    def cancel(self, identity: bytes, req_id: int) -> None:
        pass


def _reply_from_task(call: Inbound, task: asyncio.Future[Any]) -> None:
    if task.cancelled():
        call.fail(asyncio.CancelledError("the service call was cancelled"))
        return
    exc = task.exception()
    if exc is not None:
        call.fail(exc)
    else:
        call.reply(task.result())
