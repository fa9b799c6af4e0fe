"""An application's deployments: from the bound graph a user passes to `serve.run` to the
deployment targets the controller runs. Nothing here touches a cluster.

One bound node is one deployment however often it is passed; a deployment bound again
(other arguments) is another deployment, named `Name_1`, `Name_2`... as in Ray. Bound
deployments in constructor arguments become handles; deployment graphs become plans.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from .._config import DEFAULT
from .._data.handle import DeploymentHandle
from .._obs_config import LoggingConfig
from ..exceptions import GraphWithoutIngressError
from ..messages import DeploymentTarget
from .deployment import Deployment
from .graph import Application, compile_graph, is_graph

__all__ = ["app_targets", "with_logging"]


def _collect(app: Application, app_name: str, out: dict[str, DeploymentTarget], route_prefix: Any,
             names: dict[int, Any] | None = None) -> DeploymentHandle:
    """Deploy targets for `app` and everything bound into it; bound nodes become handles.

    One bound node is one deployment however often it is passed; a deployment bound
    again (other arguments) is another deployment, named `Name_1`, `Name_2`... as in Ray."""
    names = {} if names is None else names  # id(node) -> its deployment name (and the nodes, kept alive)

    def replace(value: Any) -> Any:
        if is_graph(value):  # a deployment graph: its plan, with the deployments it reaches
            return compile_graph(value, lambda node: _collect(node, app_name, out, None, names))
        if isinstance(value, Application):
            return _collect(value, app_name, out, None, names)
        if isinstance(value, Deployment):
            bound = names.setdefault(id(value), (value, value.bind()))[1]
            return _collect(bound, app_name, out, None, names)
        if isinstance(value, (list, tuple)):
            return type(value)(replace(v) for v in value)
        if isinstance(value, dict):
            return {k: replace(v) for k, v in value.items()}
        return value

    seen = names.get(id(app))
    if seen is not None:
        return DeploymentHandle(seen[1], app_name)
    d = app.deployment
    taken = set(out) | {v[1] for v in names.values() if isinstance(v[1], str)}
    name, n = d.name, 0
    while name in taken:
        n += 1
        name = f"{d.name}_{n}"
    names[id(app)] = (app, name)
    if name != d.name:
        d = d.options(name=name)
    args = tuple(replace(a) for a in app.args)
    kwargs = {k: replace(v) for k, v in app.kwargs.items()}
    out[name] = d.target(args, kwargs, app_name, route_prefix)
    return DeploymentHandle(name, app_name)


def app_targets(target: Application, name: str, route_prefix: Any = DEFAULT) -> tuple[DeploymentHandle,
                                                                                      list[DeploymentTarget]]:
    """The ingress handle and the deployment targets of an application; deploys nothing.

    The application is served at `route_prefix` if given, else at its ingress deployment's
    own `route_prefix` option if it has one, else at "/" (as Ray 2.x); its other deployments
    have no HTTP route."""
    if route_prefix is DEFAULT:
        route_prefix = target.deployment.given_route_prefix
    if route_prefix is DEFAULT:
        route_prefix = "/"
    if is_graph(target):
        raise GraphWithoutIngressError(f"{target!r} is a deployment graph node; a graph needs an ingress: "
                                       "DAGDriver.bind(graph) with `from serve.drivers import DAGDriver`")
    targets: dict[str, DeploymentTarget] = {}
    handle = _collect(target, name, targets, route_prefix)
    targets[handle.deployment_name] = dataclasses.replace(targets[handle.deployment_name], ingress=True,
                                                          import_path=_import_path(target.deployment.func_or_class))
    return handle, list(targets.values())


def _import_path(func_or_class: Any) -> str:
    """`module:QualName` of an ingress passed to `serve.run` (a config's own import path
    replaces it)."""
    return f"{func_or_class.__module__}:{func_or_class.__qualname__}"


def with_logging(targets: Iterable[DeploymentTarget], logging_config: LoggingConfig | None) -> list[DeploymentTarget]:
    """`targets`, those without a `logging_config` of their own given the application's."""
    if logging_config is None:
        return list(targets)
    return [t if t.config.logging_config is not None else
            dataclasses.replace(t, config=t.config.model_copy(update={"logging_config": logging_config}))
            for t in targets]
