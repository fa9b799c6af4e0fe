"""`@serve.ingress(app)`: a FastAPI or Starlette app served by a deployment class.

The class's methods that are the app's route endpoints become handlers with `self`
bound to the replica's instance: in each replica, every such route is rebuilt (through
FastAPI's public `add_api_route`) around a wrapper whose signature drops `self`, so path
parameters, validation, dependency injection and the OpenAPI docs keep working. Requests
reach the app with the deployment's route prefix as `root_path`.

Which endpoints are a class's: at decoration, the app's routes whose endpoint is a function
defined in the class body (by `__qualname__`, so two methods of one name, as in Ray's
guide, both count) are marked with the class. One app object may be shared by several
ingress classes (Ray's `/api1`, `/api2` example): in a replica, the routes marked with
other classes are dropped from its copy of the app, the class's own are bound, and the
app's plain routes are served as they are.
"""

from __future__ import annotations

import copyreg
import functools
import inspect
import typing
from typing import Any

__all__ = ["ingress", "bind_app"]

ASGI_APP_ATTR = "_serve_asgi_app"
OWNER_ATTR = "_serve_ingress_class"  # set on an endpoint function: the ingress class it belongs to


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
        setattr(cls, ASGI_APP_ATTR, app)
        _mark_endpoints(app, cls)
        return cls

    return decorate


def _mark_endpoints(app: Any, cls: type) -> None:
    """Mark the app's endpoints defined in `cls`'s body (not yet claimed) as `cls`'s."""
    prefix = cls.__qualname__ + "."
    for route in getattr(getattr(app, "router", None), "routes", []):
        endpoint = getattr(route, "endpoint", None)
        if (inspect.isfunction(endpoint) and getattr(endpoint, OWNER_ATTR, None) is None
                and endpoint.__module__ == cls.__module__ and endpoint.__qualname__.startswith(prefix)
                and "." not in endpoint.__qualname__[len(prefix):]):
            setattr(endpoint, OWNER_ATTR, cls)


def _bound(endpoint: Any, instance: Any) -> Any:
    """`endpoint` with `instance` as its first argument, and a signature without it."""
    hints = typing.get_type_hints(endpoint, include_extras=True)
    sig = inspect.signature(endpoint)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in list(sig.parameters.values())[1:]]
    if inspect.iscoroutinefunction(endpoint):
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await endpoint(instance, *args, **kwargs)
    else:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return endpoint(instance, *args, **kwargs)
    functools.update_wrapper(wrapper, endpoint)
    del wrapper.__wrapped__
    wrapper.__dict__.pop(OWNER_ATTR, None)  # bound: no longer a method to bind
    wrapper.__signature__ = sig.replace(parameters=params, return_annotation=hints.get("return", sig.return_annotation))
    return wrapper


def bind_app(instance: Any) -> Any:
    """The instance's ASGI app, with the class's endpoints bound to `instance` (or None)."""
    app = getattr(type(instance), ASGI_APP_ATTR, None)
    if app is None:
        return None
    cls = type(instance)
    router = getattr(app, "router", None)
    routes = getattr(router, "routes", [])
    for route in list(routes):  # another ingress class's methods: not served here
        owner = getattr(getattr(route, "endpoint", None), OWNER_ATTR, None)
        if owner is not None and not issubclass(cls, owner):
            routes.remove(route)
    for i, route in enumerate(list(routes)):
        endpoint = getattr(route, "endpoint", None)
        if getattr(endpoint, OWNER_ATTR, None) is None:
            continue
        bound = _bound(endpoint, instance)
        if hasattr(app, "add_api_route") and type(route).__name__ == "APIRoute":
            routes.remove(route)
            app.add_api_route(route.path, bound, methods=list(route.methods), name=route.name,
                              response_model=route.response_model, status_code=route.status_code, tags=route.tags,
                              dependencies=route.dependencies, summary=route.summary,
                              description=route.description, response_description=route.response_description,
                              responses=route.responses, deprecated=route.deprecated,
                              include_in_schema=route.include_in_schema, response_class=route.response_class)
            routes.insert(i, routes.pop())  # keep the original order (first match wins)
        else:  # a Starlette Route: its endpoint takes the request
            route.endpoint = bound
            route.app = type(route)(route.path, bound, methods=list(route.methods or []), name=route.name).app
    return app
