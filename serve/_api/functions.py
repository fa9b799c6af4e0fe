"""The public functions of `serve` that act on a running Serve: run, delete, status, lookups.

Each goes through this process's `ServeClient`; `run` starts Serve first if it is not
running (an embedded local cluster too, when the driver is not connected), as Ray Serve
does. Waits that users see (a roll-out) print progress lines as the replica counts change.
"""

from __future__ import annotations

import pickle
from typing import Any

from .._config import DEFAULT, validate_route_prefix
from .._data.client import ServeClient
from .._data.handle import DeploymentHandle
from ..messages import DeploymentTarget
from . import startup
from .application import app_targets
from .deployment import Deployment
from .graph import Application, is_graph

__all__ = ["delete", "get_deployment", "list_deployments", "run", "status"]


def run(target: Any, *, name: str = "default", route_prefix: Any = DEFAULT, host: str | None = None,
        port: int | None = None, blocking: bool = False, _wait: bool = True) -> DeploymentHandle:
    """Deploy an application (a bound deployment graph) and return its ingress handle."""
    if isinstance(target, Deployment):
        target = target.bind()
    if is_graph(target):
        raise TypeError(f"serve.run got a deployment graph node ({target!r}); a graph needs an ingress: "
                        "serve.run(DAGDriver.bind(graph)) with `from serve.drivers import DAGDriver`")
    if not isinstance(target, Application):
        raise TypeError(f"serve.run takes a bound deployment (MyDeployment.bind(...)), got {type(target).__name__}")
    if route_prefix is not DEFAULT:
        validate_route_prefix(route_prefix)
    http: dict[str, Any] = {}
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    startup.start(http_options=http or None)
    startup.follow_replica_output()
    handle, targets = app_targets(target, name, route_prefix)
    ServeClient.current().deploy(targets, wait=_wait)
    return handle


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application (or, for 1.x programs, a deployment) by name."""
    client = startup.running_client()
    if not client.delete_app(name, wait=_blocking):
        client.delete([name], wait=_blocking)


def status() -> dict[str, Any]:
    return startup.running_client().status()


def _deployment_of(target: DeploymentTarget) -> Deployment:
    func_or_class, init_args, init_kwargs = pickle.loads(target.code)
    cfg = target.config
    opts: dict[str, Any] = {
        "name": target.name, "route_prefix": target.route_prefix, "max_ongoing_requests": cfg.max_ongoing_requests,
        "max_queued_requests": cfg.max_queued_requests, "user_config": cfg.user_config,
        "actor_options": cfg.actor_options, "init_args": init_args, "init_kwargs": init_kwargs,
    }
    if target.version_given:
        opts["version"] = target.version
    if cfg.autoscaling_config is not None:
        opts["autoscaling_config"] = cfg.autoscaling_config
    else:
        opts["num_replicas"] = cfg.num_replicas
    return Deployment(func_or_class, opts)


def list_deployments() -> dict[str, Deployment]:
    targets = startup.running_client().targets()
    return {name: _deployment_of(t) for name, t in targets.items()}


def get_deployment(name: str) -> Deployment:
    targets = startup.running_client().targets()
    if name not in targets:
        raise KeyError(f"there is no deployment named {name!r}; deployed: {sorted(targets)}")
    return _deployment_of(targets[name])
