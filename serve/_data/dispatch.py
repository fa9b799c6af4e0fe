"""A replica's user code: which callable a method name reaches, how it runs, what it answers.

`MethodDispatch._handle` runs one request on the user's callable (a mixin of `ReplicaActor`,
which owns the state it reads): an HTTP request goes to an `@serve.ingress` app, or to
`__call__` (with a starlette Request if it takes an argument); a handle call to the named
public method. A coroutine method is awaited, an async generator iterated on the replica's
loop, a sync method run on a thread (so it never blocks the loop). A websocket handshake
gets a `WebSocketSession` of the ingress app, or, for a replica that is no ASGI ingress, a
refusal as an app closing it would send (403 to the client, not an error).
Invariant: a method name is inspected once (`_kinds`), not on every call; a user exception
is logged here with its traceback and re-raised to the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from typing import TYPE_CHECKING, Any

from proxy import (
    StreamBody,
    WebSocketSession,
    WebSocketStart,
    iterate_in_thread,
    run_asgi,
    to_http_response,
    to_starlette_request,
)

from ..exceptions import MethodNotFoundError
from ..messages import HTTP_METHOD, WEBSOCKET_METHOD
from .context import ReplicaContext, current_context

__all__ = ["MethodDispatch", "public_methods"]

_CORO, _ASYNC_GEN, _SYNC = 1, 2, 3  # how a user method runs: awaited, iterated on the loop, on a thread

log = logging.getLogger("serve._data.replica")  # the replica's logger: its lines name it as they did
# The answer to a websocket handshake for a deployment that is not an ASGI ingress (the
# proxy answers the client 403); session 0 is no session.
_NO_WEBSOCKETS = {"type": "websocket.close", "code": 1008, "reason": "this deployment takes no websockets"}


class MethodDispatch:
    """The request side of `ReplicaActor`: its user's callable, called by method name."""

    if TYPE_CHECKING:  # set by ReplicaActor
        _deployment: str
        _callable: Any
        _context: ReplicaContext
        _asgi: Any
        _is_function: bool
        _methods: list[str]
        _kinds: dict[str, tuple[Any, int]]
        _call_takes_request: bool | None

        async def ready(self) -> dict[str, Any]: ...

    def _method(self, name: str) -> tuple[Any, int]:
        """The callable behind a method name and how it runs (_CORO, _ASYNC_GEN or _SYNC),
        looked up once per name (inspecting it on every call cost ~4% of a no-op call)."""
        found = self._kinds.get(name)
        if found is None:
            if name not in self._methods:
                raise MethodNotFoundError.of(self._deployment, name, self._methods)
            fn = self._callable if self._is_function else getattr(self._callable, name)
            kind = _CORO if inspect.iscoroutinefunction(fn) else _ASYNC_GEN if inspect.isasyncgenfunction(fn) else _SYNC
            found = self._kinds[name] = (fn, kind)
        return found

    async def _handle(self, method: str, args: tuple, kwargs: dict, stream: bool = False) -> Any:
        if self._callable is None:  # a request before the start finished (never routed so)
            await self.ready()
        http = method == HTTP_METHOD
        if http and stream:
            raise TypeError("stream=True is for handle calls; HTTP responses stream on their own")
        token = current_context.set(self._context)
        if method == WEBSOCKET_METHOD:
            try:
                if self._asgi is None:  # refused like a handshake its app closes (403), not an error
                    return WebSocketStart(0, _NO_WEBSOCKETS)
                return WebSocketSession(self._asgi, args[0])
            finally:
                current_context.reset(token)
        try:
            if http and self._asgi is not None:  # @serve.ingress: the app answers
                return await run_asgi(self._asgi, args[0])
            if http:  # from the proxy: the user's __call__ gets a starlette Request (if it takes one)
                method, kwargs = "__call__", {}
            fn, kind = self._method(method)
            if http:
                if self._call_takes_request is None:
                    self._call_takes_request = _takes_argument(fn)
                args = (to_starlette_request(args[0]),) if self._call_takes_request else ()
            if kind == _CORO:
                result = await fn(*args, **kwargs)
            elif kind == _ASYNC_GEN:  # its body runs on this loop as it is iterated
                result = fn(*args, **kwargs)
            else:
                ctx = contextvars.copy_context()
                result = await asyncio.get_running_loop().run_in_executor(None, lambda: ctx.run(fn, *args, **kwargs))
                if inspect.isawaitable(result):
                    result = await result
            if stream:
                return StreamBody(200, (), _items_of(result, self._deployment, method))
            if inspect.isgenerator(result) and not http:
                result = list(result)
            elif inspect.isasyncgen(result) and not http:
                result = [item async for item in result]
            return await to_http_response(result) if http else result
        except Exception:
            # The caller gets the error (an HTTP client a 500); the traceback goes to this replica's log.
            log.exception("%s.%s raised", self._deployment, "__call__" if http else method)
            raise
        finally:
            current_context.reset(token)


def _items_of(result: Any, deployment: str, method: str) -> Any:
    """The items of what a method called with `stream=True` returned, as an async iterator
    (a sync generator runs on threads, so a blocking `next()` never blocks the replica)."""
    if inspect.isgenerator(result):
        return iterate_in_thread(result)
    if hasattr(result, "__aiter__"):  # an async generator, a DeploymentResponseGenerator passed on
        return result.__aiter__()
    raise TypeError(f"{deployment}.{method} was called with stream=True but returned a {type(result).__name__}, "
                    "not a generator: make it yield its items, or call it through a handle without "
                    "`.options(stream=True)`")


def public_methods(callable_: Any, is_function: bool) -> list[str]:
    """What handles may call on a replica: `__call__` (a function deployment's only one) and
    the instance's public methods."""
    if is_function:
        return ["__call__"]
    names = [n for n in dir(callable_) if not n.startswith("_") and _is_method(callable_, n)]
    return sorted(names + (["__call__"] if callable(callable_) else []))


def _is_method(obj: Any, name: str) -> bool:
    """Whether `obj.name` is a method, found without running a property or `__getattr__`."""
    try:
        attr = inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return isinstance(attr, (staticmethod, classmethod)) or (not isinstance(attr, property) and callable(attr))


def _takes_argument(fn: Any) -> bool:
    """Whether `fn` (the `__call__` an HTTP request reaches) takes an argument: one that takes
    none (`def __call__(self)`, a function of no parameters) is called with none, as in Ray."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): give it the request
        return True
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in positional for p in params)

