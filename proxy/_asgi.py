"""The layers in front of the proxy's own ASGI app: the `root_path` mount and user middlewares.

`build_app(app, middlewares, root_path)` returns what uvicorn serves:

    middlewares[0](middlewares[1](... (mount(root_path, app))))

Middlewares are Starlette `Middleware(cls, *args, **kwargs)` values (anything that unpacks
into `cls, args, kwargs`), each applied as `cls(inner_app, *args, **kwargs)`, the first in
the list outermost (as Starlette orders them). They see every request as the client sent
it, before routing.

The mount (only with a non-empty `root_path`) passes a request whose path is `root_path`
or begins with `root_path + '/'` on to the app with `root_path` removed from `path` and
added to the scope's `root_path`; the built-ins `/-/healthz` and `/-/routes` also answer
at their own paths (load balancers probe the proxy directly); any other path gets 404,
answered by `outside(scope, receive, send, response)` when given (the proxy's own request
handling: an id, an observer), else directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ._codec import whole_response
from .messages import HTTPResponse

__all__ = ["BUILTIN_PATHS", "MiddlewareError", "build_app"]

BUILTIN_PATHS = frozenset({"/-/healthz", "/-/routes"})
ASGIApp = Any
Outside = Callable[[dict, Any, Any, HTTPResponse], Awaitable[None]]


class MiddlewareError(ValueError):
    """A middleware could not be applied (its constructor raised)."""


def build_app(app: ASGIApp, middlewares: Iterable[Any] = (), root_path: str = "",
              outside: Outside | None = None) -> ASGIApp:
    if root_path:
        app = _mount(app, root_path, outside)
    middlewares = list(middlewares)
    for i in reversed(range(len(middlewares))):
        cls, args, kwargs = middlewares[i]
        try:
            app = cls(app, *args, **kwargs)
        except Exception as e:
            raise MiddlewareError(f"middlewares[{i}] {middlewares[i]!r} could not wrap the proxy's app: "
                                  f"{type(e).__name__}: {e}") from e
    return app


def _mount(app: ASGIApp, root_path: str, outside: Outside | None) -> ASGIApp:
    below = root_path + "/"
    not_found = whole_response(404, ((b"content-type", b"text/plain; charset=utf-8"),),
                               f"Path not found: this proxy serves under root_path {root_path!r}.".encode())

    async def mounted(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await app(scope, receive, send)
        path = scope["path"]
        if path == root_path or path.startswith(below):
            scope = dict(scope, path=path[len(root_path):] or "/", root_path=scope.get("root_path", "") + root_path)
            return await app(scope, receive, send)
        if path in BUILTIN_PATHS:
            return await app(scope, receive, send)
        if scope["type"] == "websocket":
            return await send({"type": "websocket.close", "code": 1008})
        if outside is not None:
            return await outside(scope, receive, send, not_found)
        await send({"type": "http.response.start", "status": 404, "headers": list(not_found.headers)})
        await send({"type": "http.response.body", "body": not_found.body})

    return mounted
