"""`@serve.batch`: concurrent single-item calls become one call on a list.

The decorated function is async and takes lists: callers pass one item per argument and
each awaits its own result. Per event loop and per instance (for a method: the first
parameter is `self`) there is one queue, and one flusher task that runs batches one at a
time: a batch goes as soon as `max_batch_size` calls wait, otherwise `batch_wait_timeout_s`
after its oldest call was queued. While a batch runs, new calls queue, so under load
batches grow by themselves.

On an async generator (streaming batches) each step yields a list with one item per
caller of the batch, and each caller gets an async generator over its own items; an item
that is `StopIteration` or `StopAsyncIteration` (the class) ends that caller's stream while
the others go on. The batch's generator is closed once every caller has finished or left.

Invariants: every caller gets exactly one outcome — its element of the returned list, the
function's exception (same type, one copy per caller), or a TypeError / ValueError when the
return is not a list with one result per input (a stream: its items, then its end or that
error). A cancelled caller is left out of its batch
(or its result is dropped) without disturbing the others. A user error never stops the
flusher. Calls whose arguments differ in shape (number of positional arguments, keyword
names) never share a batch.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import math
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["batch"]


_END = object()  # (an item StopIteration or StopAsyncIteration ends its caller's stream)


@dataclass(slots=True)
class _Call:
    args: tuple
    kwargs: dict[str, Any]
    future: asyncio.Future  # done: answered (a stream: ended), or the caller left
    queued_at: float
    items: asyncio.Queue | None = None  # a streaming call's items, then _END or an exception
    shape: tuple = field(init=False)

    def __post_init__(self) -> None:
        self.shape = (len(self.args), tuple(sorted(self.kwargs)))


def _exception_for_caller(exc: Exception) -> Exception:
    """A copy of `exc` (same type, args, attributes and traceback), so that callers
    re-raising it do not all grow one shared traceback; `exc` itself if it cannot be copied."""
    try:
        clone = copy.copy(exc)
    except Exception:
        return exc
    if type(clone) is not type(exc):
        return exc
    clone.__cause__, clone.__context__ = exc.__cause__, exc.__context__
    clone.__suppress_context__ = exc.__suppress_context__
    return clone.with_traceback(exc.__traceback__)


class _BatchQueue:
    """The calls waiting for one (function, instance, loop), and the task that runs them."""

    def __init__(self, batcher: _Batcher, owner: Callable[[], Any] | None, loop: asyncio.AbstractEventLoop) -> None:
        self.batcher = batcher
        self.owner = owner  # returns the instance (a weak reference where possible)
        self.loop = loop
        self._calls: deque[_Call] = deque()
        self._full = asyncio.Event()
        self._flusher: asyncio.Task | None = None

    def submit(self, args: tuple, kwargs: dict[str, Any]) -> asyncio.Future:
        return self.enqueue(_Call(args, kwargs, self.loop.create_future(), self.loop.time())).future

    def submit_stream(self, args: tuple, kwargs: dict[str, Any]) -> _Call:
        return self.enqueue(_Call(args, kwargs, self.loop.create_future(), self.loop.time(), asyncio.Queue()))

    def enqueue(self, call: _Call) -> _Call:
        self._calls.append(call)
        if len(self._calls) >= self.batcher.max_batch_size:
            self._full.set()
        if self._flusher is None:
            self._flusher = self.loop.create_task(self._run())
        return call

    async def _run(self) -> None:
        try:
            while self._calls:
                batch = await self._next_batch()
                if batch:
                    await self._process(batch)
        finally:
            self._flusher = None
            for call in self._calls:  # only when this task itself was cancelled (loop closing)
                call.future.cancel()
            self._calls.clear()

    async def _next_batch(self) -> list[_Call]:
        max_size, wait_s = self.batcher.max_batch_size, self.batcher.batch_wait_timeout_s
        while self._calls and self._calls[0].future.done():  # cancelled before its turn
            self._calls.popleft()
        if not self._calls:
            return []
        deadline = self._calls[0].queued_at + wait_s
        while len(self._calls) < max_size:
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            self._full.clear()
            try:
                await asyncio.wait_for(self._full.wait(), remaining)
            except asyncio.TimeoutError:
                break
        shape = self._calls[0].shape
        batch: list[_Call] = []
        other_shapes: list[_Call] = []
        while self._calls and len(batch) < max_size:
            call = self._calls.popleft()
            if not call.future.done():
                (batch if call.shape == shape else other_shapes).append(call)
        self._calls.extendleft(reversed(other_shapes))
        if len(self._calls) < max_size:
            self._full.clear()
        return batch

    async def _process(self, batch: list[_Call]) -> None:
        nargs, kwnames = batch[0].shape
        args = [[call.args[i] for call in batch] for i in range(nargs)]
        kwargs = {name: [call.kwargs[name] for call in batch] for name in kwnames}
        fn = self.batcher.fn
        if self.batcher.streaming:
            await self._stream(batch, fn(self.owner(), *args, **kwargs) if self.owner is not None else
                               fn(*args, **kwargs))
            return
        try:
            results = await (fn(self.owner(), *args, **kwargs) if self.owner is not None else fn(*args, **kwargs))
            error = self.batcher.check_results(results, len(batch))
        except asyncio.CancelledError:
            for call in batch:
                call.future.cancel()
            raise
        except Exception as e:
            error, results = e, None
        for i, call in enumerate(batch):
            if call.future.done():  # the caller was cancelled meanwhile
                continue
            if error is None:
                call.future.set_result(results[i])
            else:
                call.future.set_exception(error if i == 0 else _exception_for_caller(error))


    async def _stream(self, batch: list[_Call], gen: Any) -> None:
        """Hand each caller its item of every list the batch's generator yields."""
        error: BaseException | None = None
        try:
            async for results in gen:
                error = self.batcher.check_results(results, len(batch))
                if error is not None:
                    break
                for call, item in zip(batch, results, strict=True):
                    if call.future.done():  # ended, or its caller left
                        continue
                    if item is StopIteration or item is StopAsyncIteration:
                        call.future.set_result(None)
                        call.items.put_nowait(_END)  # type: ignore[union-attr]
                    else:
                        call.items.put_nowait(item)  # type: ignore[union-attr]
                if all(call.future.done() for call in batch):
                    break  # nobody is listening any more
        except asyncio.CancelledError:
            error = asyncio.CancelledError()
            raise
        except Exception as e:
            error = e
        finally:
            await gen.aclose()
            first = True
            for call in batch:
                if call.future.done():
                    continue
                call.future.set_result(None)
                if error is None:
                    call.items.put_nowait(_END)  # type: ignore[union-attr]
                else:
                    copy_ = error if first or not isinstance(error, Exception) else _exception_for_caller(error)
                    call.items.put_nowait(copy_)  # type: ignore[union-attr]
                    first = False


class _Batcher:
    """One batched function: its options and its queues (none travel when pickled)."""

    def __init__(self, fn: Callable[..., Any], max_batch_size: int, batch_wait_timeout_s: float) -> None:
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.streaming = inspect.isasyncgenfunction(fn)
        params = list(inspect.signature(fn).parameters)
        self.is_method = bool(params) and params[0] == "self"
        self._queues: dict[int | None, _BatchQueue] = {}

    def __reduce__(self) -> tuple:
        return (_Batcher, (self.fn, self.max_batch_size, self.batch_wait_timeout_s))

    def queue(self, instance: Any) -> _BatchQueue:
        loop = asyncio.get_running_loop()
        key = id(instance) if self.is_method else None
        q = self._queues.get(key)
        if q is not None and q.loop is loop:
            return q
        owner: Callable[[], Any] | None = None
        if self.is_method:
            try:
                owner = weakref.ref(instance)
                if q is None:  # forget the queue with its instance
                    weakref.finalize(instance, self._queues.pop, key, None)
            except TypeError:  # not weak-referenceable: keep it (and its queue) alive
                owner = functools.partial(lambda obj: obj, instance)
        q = self._queues[key] = _BatchQueue(self, owner, loop)
        return q

    def check_results(self, results: Any, n: int) -> Exception | None:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        if not isinstance(results, (list, tuple)):
            return TypeError(f"@serve.batch function {name} must return a list with one result per input, "
                             f"got {type(results).__name__} (for a numpy array return array.tolist())")
        if len(results) != n:
            return ValueError(f"@serve.batch function {name} returned {len(results)} results for a batch of {n} "
                              f"inputs: it must return exactly one result per input, in order")
        return None


def _validate(max_batch_size: Any, batch_wait_timeout_s: Any) -> int:
    """Checks the options as Ray does; returns max_batch_size as an int (an int-valued
    float such as 8.0 is accepted)."""
    if isinstance(max_batch_size, float) and max_batch_size.is_integer():
        max_batch_size = int(max_batch_size)
    if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int):
        raise TypeError(f"serve.batch: max_batch_size must be an int >= 1, got {max_batch_size!r}")
    if max_batch_size < 1:
        raise ValueError(f"serve.batch: max_batch_size must be >= 1, got {max_batch_size}")
    if isinstance(batch_wait_timeout_s, bool) or not isinstance(batch_wait_timeout_s, (int, float)):
        raise TypeError(f"serve.batch: batch_wait_timeout_s must be a number of seconds >= 0, "
                        f"got {batch_wait_timeout_s!r}")
    if not math.isfinite(batch_wait_timeout_s) or batch_wait_timeout_s < 0:
        raise ValueError(f"serve.batch: batch_wait_timeout_s must be a finite number of seconds >= 0, "
                         f"got {batch_wait_timeout_s}")
    return max_batch_size


def _wrap(fn: Any, max_batch_size: int, batch_wait_timeout_s: float) -> Any:
    if not callable(fn):
        raise TypeError(f"@serve.batch decorates an async function or method, got {fn!r}; "
                        f"give options as keywords: @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)")
    name = getattr(fn, "__qualname__", repr(fn))
    if inspect.isgeneratorfunction(fn):
        raise TypeError(f"@serve.batch streams from async generators only: make {name} `async def` (it yields "
                        f"lists with one item per input)")
    if not inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn):
        raise TypeError(f"@serve.batch needs an async function that returns a list: make {name} "
                        f"`async def` (it takes a list of inputs and returns a list of results)")
    batcher = _Batcher(fn, max_batch_size, batch_wait_timeout_s)

    if batcher.streaming:
        batched = _streaming_wrapper(fn, batcher)
    elif batcher.is_method:
        @functools.wraps(fn)
        async def batched(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await batcher.queue(self).submit(args, kwargs)
    else:
        @functools.wraps(fn)
        async def batched(*args: Any, **kwargs: Any) -> Any:
            return await batcher.queue(None).submit(args, kwargs)

    def set_max_batch_size(value: int) -> None:
        """Change max_batch_size from now on (e.g. in `reconfigure`); checked like the option."""
        batcher.max_batch_size = _validate(value, batcher.batch_wait_timeout_s)

    def set_batch_wait_timeout_s(value: float) -> None:
        """Change batch_wait_timeout_s from now on (e.g. in `reconfigure`); checked like the option."""
        _validate(batcher.max_batch_size, value)
        batcher.batch_wait_timeout_s = value

    wrapper: Any = batched
    wrapper.set_max_batch_size = set_max_batch_size
    wrapper.set_batch_wait_timeout_s = set_batch_wait_timeout_s
    return wrapper


def _streaming_wrapper(fn: Any, batcher: _Batcher) -> Any:
    """The caller's side of a streaming batch: an async generator over its own items."""

    async def items(instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        call = batcher.queue(instance).submit_stream(args, kwargs)
        assert call.items is not None
        try:
            while True:
                item = await call.items.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if not call.future.done():
                call.future.cancel()  # the caller left: out of its batch, its items dropped

    if batcher.is_method:
        @functools.wraps(fn)
        async def batched(self: Any, *args: Any, **kwargs: Any) -> Any:
            async for item in items(self, args, kwargs):
                yield item
    else:
        @functools.wraps(fn)
        async def batched(*args: Any, **kwargs: Any) -> Any:
            async for item in items(None, args, kwargs):
                yield item
    return batched


def batch(_func: Any = None, *, max_batch_size: int = 10, batch_wait_timeout_s: float = 0.0) -> Any:
    """`@serve.batch` or `@serve.batch(max_batch_size=10, batch_wait_timeout_s=0.0)` on an
    async function or method that takes a list of inputs and returns a list of results
    (or an async generator that yields such lists: each caller streams its own items).

    Callers pass one input (per argument) and get its result. Up to `max_batch_size` calls
    go in one batch; a batch that is not full goes `batch_wait_timeout_s` after its first
    call was queued. Batches of one function (per instance) run one at a time. The result
    has `set_max_batch_size(n)` and `set_batch_wait_timeout_s(s)` to change the options later
    (for every instance, as in Ray Serve)."""
    max_batch_size = _validate(max_batch_size, batch_wait_timeout_s)
    if _func is not None:
        return _wrap(_func, max_batch_size, batch_wait_timeout_s)
    return lambda fn: _wrap(fn, max_batch_size, batch_wait_timeout_s)
