"""`@serve.ingress(app)`: a FastAPI or Starlette app served by a deployment class.

Which routes are a class's: at decoration, the app's routes whose endpoint is a function
defined in the class body (by `__qualname__`, so two methods of one name, as in Ray's
guide, both count) and not claimed by an earlier class.

FastAPI routes are converted at decoration, where the class is defined (so string
annotations resolve in their own module, even for a class that reaches replicas by
value from a script): each becomes an `APIRoute` with the same options around a wrapper
whose `self` parameter is a dependency, `Depends(_Instance(cls))`, that returns the
replica's instance. Path parameters, validation, dependency injection and the OpenAPI docs
work as for plain functions, and `self` never shows in the schema. Starlette routes (whose
endpoint takes the request, or the websocket) are bound to the instance in the replica.
`@app.websocket` routes are converted like the others (FastAPI's `APIWebSocketRoute`).

One app object may be shared by several ingress classes (Ray's `/api1`, `/api2` example):
in a replica (`bind_app`), the routes of other classes are dropped from its copy of the
app; the class's own and the app's plain routes are served. Requests reach the app with
the deployment's route prefix as `root_path`.
"""

from __future__ import annotations

import copyreg
import functools
import inspect
import typing
from typing import Any

__all__ = ["ingress", "bind_app"]

ASGI_APP_ATTR = "_serve_asgi_app"
OWNER_ATTR = "_serve_ingress_class"  # on an endpoint: the ingress class it belongs to
_INSTANCES: dict[type, Any] = {}  # in a replica: its ingress class (and bases) -> the instance


def _reduce_state(state: Any) -> tuple:
    return (type(state), (dict(state._state),))


try:  # Starlette's State recurses in __getattr__ when unpickled the default way
    from starlette.datastructures import State

    copyreg.pickle(State, _reduce_state)
except ImportError:  # pragma: no cover - starlette is a dependency
    pass


def ingress(app: Any) -> Any:
    """Class decorator: serve `app` (FastAPI or Starlette) from this deployment class."""
    if not callable(app):
        raise TypeError(f"serve.ingress takes an ASGI app (FastAPI or Starlette), got {app!r}")

    def decorate(cls: type) -> type:
        if not inspect.isclass(cls):
            raise TypeError(f"@serve.ingress decorates a class, got {cls!r}")
        if any("__call__" in vars(k) for k in cls.__mro__ if k is not object):
            raise ValueError(f"@serve.ingress class {cls.__qualname__} defines __call__, which the app would never "
                             "reach (the ingress app answers every HTTP request): remove __call__, or serve HTTP "
                             "from __call__ without @serve.ingress")
        setattr(cls, ASGI_APP_ATTR, app)
        _claim_routes(app, cls)
        return cls

    return decorate


def _routes(app: Any) -> list:
    return getattr(getattr(app, "router", None), "routes", [])


def _claim_routes(app: Any, cls: type) -> None:
    """Mark the app's endpoints defined in `cls`'s body as `cls`'s; convert FastAPI routes."""
    prefix = cls.__qualname__ + "."
    routes = _routes(app)
    for i, route in enumerate(list(routes)):
        endpoint = getattr(route, "endpoint", None)
        if not (inspect.isfunction(endpoint) and getattr(endpoint, OWNER_ATTR, None) is None
                and endpoint.__module__ == cls.__module__ and endpoint.__qualname__.startswith(prefix)
                and "." not in endpoint.__qualname__[len(prefix):]):
            continue
        setattr(endpoint, OWNER_ATTR, cls)
        if _is_api_route(route):
            routes[i] = _api_route(route, _with_self_dependency(endpoint, cls))


def _is_api_route(route: Any) -> bool:
    """A FastAPI route (also of a custom `route_class`, or `@app.websocket`), as opposed to a
    Starlette one."""
    try:
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:  # pragma: no cover - fastapi is a dependency
        return False
    return isinstance(route, (APIRoute, APIWebSocketRoute))


def _api_route(route: Any, endpoint: Any) -> Any:
    """A copy of FastAPI `route` (every option its constructor takes) around `endpoint`."""
    cls = type(route)
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "path", "endpoint")]
    return cls(route.path, endpoint, **{n: getattr(route, n) for n in names if hasattr(route, n)})


class _Instance:
    """The FastAPI dependency that gives a method of `cls` its `self`: the replica's instance."""

    def __init__(self, cls: type) -> None:
        self.cls = cls

    async def __call__(self) -> Any:
        instance = _INSTANCES.get(self.cls)
        if instance is None:
            raise RuntimeError(f"{self.cls.__qualname__}'s routes run in the replicas of its deployment; "
                               "deploy it (serve.run) and call it over HTTP")
        return instance


def _hints(endpoint: Any, cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(endpoint, include_extras=True)
    except Exception as e:
        raise TypeError(f"@serve.ingress: cannot resolve the annotations of {endpoint.__qualname__} "
                        f"({type(e).__name__}: {e}); define the names they use before class {cls.__name__}") from None


def _with_self_dependency(endpoint: Any, cls: type) -> Any:
    """`endpoint` with its first parameter (`self`) filled by `Depends(_Instance(cls))`."""
    from fastapi import Depends

    hints = _hints(endpoint, cls)
    sig = inspect.signature(endpoint)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"@serve.ingress: route method {endpoint.__qualname__} needs `self` as its first parameter")
    # FastAPI passes everything by keyword: keyword-only parameters may have defaults in any order.
    keyword = inspect.Parameter.KEYWORD_ONLY
    first = params[0].replace(kind=keyword, annotation=inspect.Parameter.empty, default=Depends(_Instance(cls)))
    rest = [p.replace(kind=keyword if p.kind is not inspect.Parameter.VAR_KEYWORD else p.kind,
                      annotation=hints.get(p.name, p.annotation))
            for p in params[1:] if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    wrapper: Any
    if inspect.iscoroutinefunction(endpoint):
        async def call_async(*args: Any, **kwargs: Any) -> Any:
            return await endpoint(*args, **kwargs)
        wrapper = call_async
    else:
        def call(*args: Any, **kwargs: Any) -> Any:
            return endpoint(*args, **kwargs)
        wrapper = call
    functools.update_wrapper(wrapper, endpoint)
    del wrapper.__wrapped__
    wrapper.__signature__ = sig.replace(parameters=[first, *rest],
                                        return_annotation=hints.get("return", sig.return_annotation))
    return wrapper


def _bound_request_handler(endpoint: Any, instance: Any) -> Any:
    """A Starlette endpoint (takes the request) with `instance` as its `self`."""
    handler: Any
    if inspect.iscoroutinefunction(endpoint):
        async def handle_async(request: Any) -> Any:
            return await endpoint(instance, request)
        handler = handle_async
    else:
        def handle(request: Any) -> Any:
            return endpoint(instance, request)
        handler = handle
    functools.update_wrapper(handler, endpoint)
    del handler.__wrapped__
    handler.__dict__.pop(OWNER_ATTR, None)
    return handler


def bind_app(instance: Any) -> Any:
    """In a replica: the instance's ASGI app, serving the instance's routes (or None)."""
    from starlette.routing import WebSocketRoute
    cls = type(instance)
    app = getattr(cls, ASGI_APP_ATTR, None)
    if app is None:
        return None
    for klass in cls.__mro__[:-1]:
        _INSTANCES[klass] = instance
    routes = _routes(app)
    for route in list(routes):  # another ingress class's methods: not served here
        owner = getattr(getattr(route, "endpoint", None), OWNER_ATTR, None)
        if owner is not None and not issubclass(cls, owner):
            routes.remove(route)
    for route in routes:  # Starlette routes of this class: bind their endpoint
        endpoint = getattr(route, "endpoint", None)
        if getattr(endpoint, OWNER_ATTR, None) is not None and not _is_api_route(route):
            bound = _bound_request_handler(endpoint, instance)
            route.endpoint = bound
            if isinstance(route, WebSocketRoute):  # its endpoint takes the websocket
                route.app = WebSocketRoute(route.path, bound, name=route.name).app
            else:
                route.app = type(route)(route.path, bound, methods=list(route.methods or []), name=route.name).app
    return app
