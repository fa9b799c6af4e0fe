"""serve.drivers: DAGDriver, the ingress of a deployment graph (Ray Serve 1.x `ray.serve.drivers`).

    handle = serve.run(DAGDriver.bind(graph, http_adapter=json_request))
    await handle.predict.remote(x)          # runs the graph on x
    POST / with a JSON body                 # runs it on the body (GET / too)

`DAGDriver.bind({"/a": graph_a, "/b": graph_b})` serves several graphs: HTTP picks by path
(below the driver's route_prefix, "/" by default), handles call
`predict_with_route("/a", x)`. The graph runs inside the driver's replica: it calls the
graph's deployments through their handles, all at once, passing responses along.
"""

from __future__ import annotations

import inspect
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ._api.deployment import Deployment
from ._api.graph import Application, DAGHandle, is_graph
from ._build import import_attr
from ._model import reject_unknown
from .http_adapters import json_request, pydantic_request

__all__ = ["DAGDriver"]


def _load_adapter(http_adapter: Any) -> Any:
    if http_adapter is None:
        return json_request
    if isinstance(http_adapter, str):
        http_adapter = import_attr(http_adapter)
    is_model = hasattr(http_adapter, "model_validate") or hasattr(http_adapter, "parse_obj")
    if inspect.isclass(http_adapter) and is_model:
        return pydantic_request(http_adapter)  # a pydantic model: the JSON body validated into it
    return http_adapter


def _check_route(route: Any) -> str:
    if not isinstance(route, str) or not route.startswith("/"):
        raise ValueError(f"DAGDriver routes are paths starting with '/', got {route!r}")
    return route.rstrip("/") or "/"


class DAGDriver:
    """Runs one deployment graph (or one per route) for handle calls and HTTP requests."""

    def __init__(self, dags: DAGHandle | dict[str, DAGHandle], http_adapter: Any = None) -> None:
        if isinstance(dags, dict):
            self._routes = {_check_route(route): dag for route, dag in dags.items()}
            self._default = None
        else:
            self._routes = {}
            self._default = dags
        self._adapter = _load_adapter(http_adapter)

    def _default_dag(self) -> DAGHandle:
        if self._default is None:
            raise ValueError(f"this DAGDriver serves several graphs ({sorted(self._routes)}): call "
                             "predict_with_route(route, ...)")
        return self._default

    def _dag(self, route: str) -> DAGHandle | None:
        return self._routes.get(route.rstrip("/") or "/", self._default)

    async def __call__(self, request: Any) -> Any:
        if not isinstance(request, Request):  # from a handle: `handle.remote(x)` as predict(x)
            return await self._default_dag().remote(request)
        dag = self._dag(request.scope.get("path") or "/")
        if dag is None:
            return JSONResponse({"error": f"no graph at {request.url.path}; routes: {sorted(self._routes)}"},
                                status_code=404)
        try:
            value = self._adapter(request)
            if inspect.isawaitable(value):
                value = await value
        except (ValueError, TypeError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return await dag.remote(value)

    async def predict(self, *args: Any, **kwargs: Any) -> Any:
        return await self._default_dag().remote(*args, **kwargs)

    async def predict_with_route(self, route_path: str, *args: Any, **kwargs: Any) -> Any:
        dag = self._routes.get(route_path.rstrip("/") or "/") if self._routes else self._default
        if dag is None:
            raise KeyError(f"this DAGDriver has no graph at {route_path!r}; routes: {sorted(self._routes)}")
        return await dag.remote(*args, **kwargs)


def _check_graph(what: str, value: Any) -> None:
    if is_graph(value):
        return
    if isinstance(value, Application):
        raise TypeError(f"{what}: {value.deployment.name}.bind(...) is a class node, not a graph output; bind one "
                        f"of its methods to the input, e.g. node.method.bind(inp), or node.bind(inp) for __call__")
    raise TypeError(f"{what} must be a deployment graph (built from @serve.deployment nodes and an InputNode), "
                    f"got {type(value).__name__} {value!r}")


class _DriverDeployment(Deployment):
    """The DAGDriver deployment: `.bind()` checks its graphs and adapter in the driver program."""

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        reject_unknown(kwargs, ("dags", "http_adapter"), "DAGDriver.bind()")
        if not args and "dags" not in kwargs:
            raise TypeError("DAGDriver.bind(graph) takes the graph to serve (or a dict {route: graph})")
        dags = args[0] if args else kwargs["dags"]
        if isinstance(dags, dict):
            if not dags:
                raise ValueError("DAGDriver.bind({}) has no graph to serve")
            for route, dag in dags.items():
                _check_route(route)
                _check_graph(f"DAGDriver.bind({{{route!r}: ...}})", dag)
        else:
            _check_graph("DAGDriver.bind(graph)", dags)
        adapter = args[1] if len(args) > 1 else kwargs.get("http_adapter")
        if isinstance(adapter, str):
            import_attr(adapter)  # an import path that does not resolve fails here
        elif adapter is not None and not callable(adapter):
            raise TypeError(f"http_adapter must be a function of the request (or its import path), got {adapter!r}")
        return super().bind(*args, **kwargs)


# The module attribute is the deployment (replicas import the class through it).
DAGDriver = _DriverDeployment(DAGDriver, {"route_prefix": "/"})  # type: ignore[misc,assignment]
