"""Model multiplexing in a replica: `@serve.multiplexed`, its per-replica model cache, and
`serve.get_multiplexed_model_id()`.

`@serve.multiplexed(max_num_models_per_replica=N)` wraps an async loader (a method
`load(self, model_id)` or a function `load(model_id)`). Each replica (each instance, for a
method) gets one `ModelCache`: an LRU of model_id -> model of at most N entries.

Invariants:
- one load per model id at a time: concurrent first requests await the same load (a task
  of its own, so a cancelled request does not cancel the load others wait for); a failed
  load is not cached (the next request tries again);
- room is made before a load starts (held + loading <= N while any held model can go), so a
  replica holds at most N models, except while more than N distinct loads run at once;
- an evicted model is closed: `await model.aclose()`, else `model.close()` (awaited if it
  returns an awaitable; a sync one runs on a thread), else an `async def __del__` is
  awaited; a plain `__del__` runs when the last reference goes (the cache drops its own);
- each change of the held set is reported (`set_listener`), a model counted from the start
  of its load (so a report made meanwhile does not tell routers it is not there): the
  replica pushes it to the controller, which folds it into the replica set routers receive
  (see `model_routing`). A replica says its capacity when it starts (`capacity_of`).

Metrics (`serve_metrics.multiplex_metrics`): loads, unloads, load latency, requests per
model and models held.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import inspect
import logging
import time
import warnings
import weakref
from collections.abc import Callable
from typing import Any

from . import counting
from .context import MODEL, current_request, process_context
from .serve_metrics import multiplex_metrics

__all__ = ["ModelCache", "capacity_of", "get_multiplexed_model_id", "multiplexed", "set_listener"]

log = logging.getLogger(__name__)

# What hears of changes to the models held (the replica actor; None outside a replica):
# called with (model ids, oldest first; the capacity, -1 for no limit).
_listener: Callable[[tuple[str, ...], int], None] | None = None
_caches: weakref.WeakSet[ModelCache] = weakref.WeakSet()  # the decorated loaders' caches of this process


def set_listener(fn: Callable[[tuple[str, ...], int], None] | None) -> None:
    """Who hears of each change of a cache's models (the replica, which reports them)."""
    global _listener
    _listener = fn


def get_multiplexed_model_id() -> str:
    """The model id of the request being handled ("" when it names none, or outside a request):
    the HTTP header `serve_multiplexed_model_id`, or `handle.options(multiplexed_model_id=...)`."""
    return current_request.get()[MODEL]


def _labels() -> tuple[str, str, str]:
    ctx = process_context()
    if ctx is None:
        return ("", "", "")
    return (ctx.deployment, ctx.replica_id, ctx.app_name)


class ModelCache:
    """At most `capacity` models (-1: no limit) by id, least recently used evicted first;
    `loader(model_id)` makes one. See the module docstring for the invariants."""

    def __init__(self, loader: Callable[[str], Any], capacity: int,
                 on_change: Callable[[tuple[str, ...], int], None] | None = None) -> None:
        self._loader = loader
        self.capacity = capacity
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()  # oldest first
        self._loading: dict[str, asyncio.Task] = {}
        self._on_change = on_change
        self._metrics: Any = None
        self._request_cells: dict[str, Any] = {}
        if counting.ENABLED:
            self._metrics = multiplex_metrics()
            self._metrics.held.add_source(self)
        self.loads = 0
        self.unloads = 0

    @property
    def model_ids(self) -> tuple[str, ...]:
        """The ids held, least recently used first, then those loading."""
        return (*self._models, *(m for m in self._loading if m not in self._models))

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._models

    def metric_rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        """serve_num_multiplexed_models, read at scrape time."""
        return [(_labels(), float(len(self._models)))]

    async def get(self, model_id: str) -> Any:
        """The model `model_id`: held (now the most recently used), or loaded once."""
        self._count(model_id)
        models = self._models
        if model_id in models:
            models.move_to_end(model_id)
            return models[model_id]
        task = self._loading.get(model_id)
        if task is None:
            task = self._loading[model_id] = asyncio.ensure_future(self._load(model_id))
            self._changed()
        return await asyncio.shield(task)

    async def _load(self, model_id: str) -> Any:
        try:
            while self.capacity >= 0 and self._models and len(self._models) + len(self._loading) > self.capacity:
                await self._evict()
            started = time.perf_counter()
            model = await self._loader(model_id)
            self.loads += 1
            if self._metrics is not None:
                labels = _labels()
                self._metrics.loads.cell(*labels).value += 1
                self._metrics.load_latency.cell(*labels).observe((time.perf_counter() - started) * 1000.0)
            self._models[model_id] = model
        except BaseException:
            del self._loading[model_id]
            self._changed()
            raise
        del self._loading[model_id]
        while self.capacity >= 0 and len(self._models) > self.capacity:  # more loads ran at once than it holds
            await self._evict()
        self._changed()
        return model

    async def _evict(self) -> None:
        model_id, model = self._models.popitem(last=False)
        self.unloads += 1
        if self._metrics is not None:
            self._metrics.unloads.cell(*_labels()).value += 1
        self._request_cells.pop(model_id, None)
        self._changed()
        try:
            await close_model(model)
        except Exception:
            log.exception("closing the evicted model %r raised", model_id)
        if inspect.iscoroutinefunction(getattr(type(model), "__del__", None)):
            with warnings.catch_warnings():  # its __del__ was awaited: the one the collector makes is not
                warnings.simplefilter("ignore", RuntimeWarning)
                del model
        else:
            del model  # a plain __del__ runs now, unless the user's code still holds the model

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.model_ids, self.capacity)

    def _count(self, model_id: str) -> None:
        if self._metrics is None:
            return
        cell = self._request_cells.get(model_id)
        if cell is None:
            cell = self._request_cells[model_id] = self._metrics.requests.cell(*_labels(), model_id)
        cell.value += 1


async def close_model(model: Any) -> None:
    """Release an evicted model: `aclose()`, else `close()`, else an `async def __del__`."""
    for name in ("aclose", "close"):
        fn = getattr(model, name, None)
        if callable(fn):
            if inspect.iscoroutinefunction(fn):
                await fn()
            else:
                result = await asyncio.to_thread(fn)
                if inspect.isawaitable(result):
                    await result
            return
    del_fn = getattr(type(model), "__del__", None)
    if del_fn is not None and inspect.iscoroutinefunction(del_fn):
        await del_fn(model)


def capacity_of(obj: Any) -> int:
    """How many models the `@serve.multiplexed` loaders of a deployment's instance hold
    together (0: it has none; -1: no limit)."""
    capacities = []
    for name in dir(type(obj)):
        try:
            attr = inspect.getattr_static(obj, name)
        except AttributeError:
            continue
        capacity = getattr(attr, "_serve_max_models", None)
        if isinstance(capacity, int):
            capacities.append(capacity)
    return _total(capacities)


def _total(capacities: list[int]) -> int:
    return -1 if any(c < 0 for c in capacities) else sum(capacities)


def _check_capacity(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or (n < 1 and n != -1):
        raise ValueError(f"@serve.multiplexed(max_num_models_per_replica=...) takes a whole number >= 1 "
                         f"(or -1 for no limit), got {n!r}")
    return n


def multiplexed(func: Callable[..., Any] | None = None, *, max_num_models_per_replica: int = 3) -> Any:
    """Make an async loader `load(self, model_id)` (or `load(model_id)`) a per-replica cache of
    at most `max_num_models_per_replica` models (-1: no limit), least recently used evicted.
    Call it with a model id (`await self.load(model_id)`), or with none inside a request to
    load the request's (`serve.get_multiplexed_model_id()`)."""
    capacity = _check_capacity(max_num_models_per_replica)
    if func is None:
        return functools.partial(multiplexed, max_num_models_per_replica=capacity)
    if not callable(func):
        raise TypeError(f"@serve.multiplexed decorates an async function or method, got {func!r}")
    if not inspect.iscoroutinefunction(func):
        raise TypeError(f"@serve.multiplexed needs an async loader (`async def {getattr(func, '__name__', 'load')}"
                        f"(self, model_id)`), got a plain function: make it `async def`")
    params = [p for p in inspect.signature(func).parameters.values()
              if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(params) not in (1, 2):
        raise TypeError(f"@serve.multiplexed loader {func.__qualname__} must take the model id as its one argument "
                        f"(`async def load(self, model_id)` or `async def load(model_id)`), it takes {len(params)}")
    is_method = len(params) == 2
    # A method's cache lives on its instance (the replica's); a function's (and that of an
    # instance without a __dict__) here. Plain containers only: the loader travels to the
    # replicas by value (cloudpickle) when its class is defined in a script.
    attr = f"_serve_models_{func.__name__}"
    plain: dict[int, ModelCache] = {}

    def cache_of(owner: Any) -> ModelCache:
        state = getattr(owner, "__dict__", None) if owner is not None else None
        cache = state.get(attr) if state is not None else plain.get(id(owner))
        if cache is None:
            loader = functools.partial(func, owner) if owner is not None else func
            cache = ModelCache(loader, capacity, _notify)
            _caches.add(cache)
            if state is not None:
                state[attr] = cache
            else:
                plain[id(owner)] = cache
        return cache

    @functools.wraps(func)
    async def wrapper(*args: Any) -> Any:
        owner = None
        if is_method:
            if not args:
                raise TypeError(f"{func.__qualname__} is a method: call it on the instance")
            owner, args = args[0], args[1:]
        if len(args) > 1:
            raise TypeError(f"{func.__qualname__} takes one model id, got {len(args)} arguments")
        model_id = args[0] if args else get_multiplexed_model_id()
        if not isinstance(model_id, str):
            raise TypeError(f"a multiplexed model id is a string, got {model_id!r}")
        if not model_id:
            raise ValueError(f"{func.__qualname__}() got no model id, and the request names none: pass one, or "
                             "send the request with the header serve_multiplexed_model_id or "
                             "handle.options(multiplexed_model_id=...)")
        return await cache_of(owner).get(model_id)

    wrapper._serve_model_cache = cache_of  # type: ignore[attr-defined]  # for tests
    wrapper._serve_max_models = capacity  # type: ignore[attr-defined]
    return wrapper


def _notify(_model_ids: tuple[str, ...], _capacity: int) -> None:
    """One loader's cache changed: the listener hears what every loader of this process
    holds (a deployment may have several: a replica's report covers them all)."""
    if _listener is not None:
        caches = list(_caches)
        held = dict.fromkeys(m for cache in caches for m in cache.model_ids)
        _listener(tuple(held), _total([cache.capacity for cache in caches]))
