"""`@actors.remote` classes, actor handles and method calls.

`ActorClass.remote()` sends the actor's spec to the head and returns an `ActorHandle` at
once; calls made before the actor is ALIVE queue in order. From a plain thread, creation
waits for the head to accept (so a taken name or an impossible resource request raises at
the call); on the runtime's loop it cannot block, and such errors reach the first call.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import sys
from typing import Any

from ._context import current, current_or_init
from ._directory import ActorDirectory
from ._futures import CallFuture
from ._options import validate_actor_options
from ._refs import ObjectRef
from ._runtime import Runtime
from ._serialization import PreparedCall, dumps_args, dumps_code
from .messages import ActorId, ActorInfo, ActorSpec, ActorState

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "method_table"]

_RESERVED = ("__zs_ready__",)


def method_table(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The callable methods of a class and which of them are coroutine functions."""
    names, async_names = [], []
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name != "__call__":
            continue
        if not callable(member) or isinstance(member, type):
            continue
        names.append(name)
        if inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member):
            async_names.append(name)
    return tuple(names), tuple(async_names)


class ActorClass:
    """A class made remote. `.remote(*args)` creates an actor; `.options(...)` a copy."""

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        if not isinstance(cls, type):
            raise TypeError(f"@actors.remote decorates classes, got {cls!r}")
        self._cls = cls
        self._methods, self._async_methods = method_table(cls)
        self._raw_options = dict(options)
        self._options = validate_actor_options(options, is_async=bool(self._async_methods))
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__doc__ = cls.__doc__

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__module__}.{self._cls.__qualname__})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor class {self.__name__} cannot be instantiated directly; use {self.__name__}.remote()")

    def options(self, **options: Any) -> "ActorClass":
        return ActorClass(self._cls, {**self._raw_options, **options})

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        rt = current_or_init()
        actor_id = ActorId.new()
        spec = ActorSpec(
            actor_id=actor_id,
            class_name=self._cls.__name__,
            module=self._cls.__module__,
            payload=dumps_code((self._cls, args, kwargs)),
            options=self._options,
            owner_address=rt.address,
            job_id=rt.job_id,
            methods=self._methods,
            async_methods=self._async_methods,
            sys_path=tuple(p for p in sys.path if p),
        )
        directory = rt.directory
        if rt.in_loop_thread():
            # Known here as PENDING at once: calls queue until the head reports it ALIVE
            # (version 0: any record from the head supersedes this one).
            directory.update(ActorInfo(actor_id, spec.class_name, ActorState.PENDING, methods=spec.methods,
                                       async_methods=spec.async_methods))
            rt.background(_create(rt, directory, spec))
            return ActorHandle(actor_id, spec.class_name, spec.methods, spec.async_methods, None)
        info = rt.run_threadsafe(lambda: _create(rt, directory, spec, raise_errors=True))
        return ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)


async def _create(rt: Runtime, directory: ActorDirectory, spec: ActorSpec, raise_errors: bool = False) -> ActorInfo:
    try:
        info = await rt.head.create_actor(spec)
    except Exception as e:
        if raise_errors:
            raise
        directory.fail_queued(spec.actor_id, e)
        directory.update(ActorInfo(spec.actor_id, spec.class_name, ActorState.DEAD, death_cause=str(e), version=1 << 62))
        raise
    directory.update(info)
    return info


class ActorHandle:
    """A reference to an actor; picklable, usable from any process of the cluster."""

    __slots__ = ("_actor_id", "_async_methods", "_class_name", "_hint", "_method_cache", "_methods")

    def __init__(self, actor_id: ActorId, class_name: str, methods: tuple[str, ...],
                 async_methods: tuple[str, ...], hint: ActorInfo | None) -> None:
        self._actor_id = actor_id
        self._class_name = class_name
        self._methods = methods
        self._async_methods = async_methods
        self._hint = hint
        self._method_cache: dict[str, ActorMethod] = {}

    @property
    def actor_id(self) -> ActorId:
        return self._actor_id

    def __repr__(self) -> str:
        return f"ActorHandle({self._class_name}, {self._actor_id})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __getattr__(self, name: str) -> "ActorMethod":
        cache = self._method_cache
        m = cache.get(name)
        if m is None:
            if name not in self._methods and name not in _RESERVED:
                raise AttributeError(f"actor {self._class_name} has no method {name!r}")
            m = cache[name] = ActorMethod(self, name)
        return m

    def __reduce__(self):
        return (ActorHandle, (self._actor_id, self._class_name, self._methods, self._async_methods,
                              self._latest_info()))

    def _latest_info(self) -> ActorInfo | None:
        rt = current()
        if rt is not None:
            info = rt.directory.info(self._actor_id)
            if info is not None:
                return info
        return self._hint


class ActorMethod:
    """`handle.method`; `.remote(*args, **kwargs)` calls it and returns an ObjectRef."""

    __slots__ = ("_handle", "_label", "_name", "_route")

    def __init__(self, handle: ActorHandle, name: str) -> None:
        self._handle = handle
        self._name = name
        self._route = b"a/" + name.encode()
        self._label = f"{handle._class_name}.{name}"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor methods are called with .remote(): use handle.{self._name}.remote(...)")

    def remote(self, *args: Any, **kwargs: Any) -> ObjectRef:
        payload, buffers = dumps_args(args, kwargs, self._label)
        return self._send(payload, buffers)

    def remote_prepared(self, call: PreparedCall) -> ObjectRef:
        """`remote()` with arguments serialized beforehand by `actors.system.prepare_call`
        (a layer above that routes a call it serialized in its caller's thread)."""
        return self._send(call.payload, call.buffers)

    def _send(self, payload: bytes, buffers: Any) -> ObjectRef:
        rt = current_or_init()
        h = self._handle
        directory = rt.directory
        label = self._label
        fut: CallFuture
        if rt.in_loop_thread():
            fut = rt.loop.create_future()
            directory.submit(h._actor_id, h._hint, self._route, payload, buffers, fut)
        else:
            fut = concurrent.futures.Future()
            rt.loop.call_soon_threadsafe(directory.submit, h._actor_id, h._hint, self._route, payload, buffers, fut)
        return ObjectRef(fut, rt, label)
