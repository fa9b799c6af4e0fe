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
from .._data.context import current_context, process_context
from .._data.handle import DeploymentHandle, RayServeHandle
from .._obs_config import LoggingConfig
from ..exceptions import ApplicationNotFoundError, DeploymentNotFoundError, GraphWithoutIngressError, OptionTypeError
from ..messages import DEFAULT_APP, DeploymentId, DeploymentTarget
from . import startup
from .application import app_targets, with_logging
from .deployment import Deployment
from .graph import Application, is_graph
from .status import ServeStatus

__all__ = ["delete", "get_app_handle", "get_deployment", "get_deployment_handle", "get_handle", "list_deployments",
           "run", "status"]


def run(target: Any, *, name: str = "default", route_prefix: Any = DEFAULT, host: str | None = None,
        port: int | None = None, blocking: bool = False, logging_config: Any = None, timeout_s: float | None = None,
        _wait: bool = True) -> DeploymentHandle:
    """Deploy an application (a bound deployment graph) and return its ingress handle.

    `logging_config` (a dict or `serve.LoggingConfig`): how the application's deployments log,
    unless one sets its own. Waits until every deployment is ready, printing its progress,
    for `timeout_s` (default `$ZEROSERVE_DEPLOY_TIMEOUT_S`, 300 s); then raises
    `serve.DeployTimeoutError` saying which deployment was not ready and why."""
    if isinstance(target, Deployment):
        target = target.bind()
    if is_graph(target):
        raise GraphWithoutIngressError(f"serve.run got a deployment graph node ({target!r}); a graph needs an "
                                       "ingress: serve.run(DAGDriver.bind(graph)) with "
                                       "`from serve.drivers import DAGDriver`")
    if not isinstance(target, Application):
        raise TypeError(f"serve.run takes a bound deployment (MyDeployment.bind(...)), got {type(target).__name__}")
    if not isinstance(name, str) or not name or "#" in name:
        raise OptionTypeError(f"serve.run(name=...) takes an application name, a non-empty string without '#', "
                              f"got {name!r}")
    if route_prefix is not DEFAULT:
        validate_route_prefix(route_prefix)
    app_logging = LoggingConfig.of(logging_config)
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                                      and timeout_s > 0):
        raise ValueError(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
    http: dict[str, Any] = {}
    if host is not None:
        http["host"] = host
    if port is not None:
        http["port"] = port
    startup.start(http_options=http or None)
    startup.follow_replica_output()
    handle, targets = app_targets(target, name, route_prefix)
    ServeClient.current().deploy_apps({name: with_logging(targets, app_logging)}, wait=_wait, timeout_s=timeout_s)
    return handle


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application (or, for 1.x programs, a deployment) by name."""
    client = startup.running_client()
    if not client.delete_app(name, wait=_blocking):
        client.delete([DeploymentId(DEFAULT_APP, name)], wait=_blocking)


def status() -> ServeStatus:
    """Serve's status (Ray 2.x `ServeStatus`): `.applications[app].status`,
    `.applications[app].deployments[name].status / .replica_states / .message`, `.proxies`;
    printed in Ray's YAML shape; also indexable as the controller's summary dict."""
    return ServeStatus(startup.running_client().status())


def get_app_handle(name: str) -> DeploymentHandle:
    """A handle to application `name`'s ingress deployment (Ray 2.x); ApplicationNotFoundError
    (a KeyError) if there is no such application. A blocking call: from async code on the
    runtime's loop (an async replica method) build `serve.get_deployment_handle(...)` instead."""
    targets = startup.running_client().targets()
    for t in targets.values():
        if t.app == name and t.ingress:
            return DeploymentHandle(t.name, name)
    apps = sorted({t.app for t in targets.values() if t.ingress})
    raise ApplicationNotFoundError(f"there is no application {name!r} (with an ingress deployment); "
                                   f"running: {apps or 'none'}")


def get_deployment_handle(deployment_name: str, app_name: str | None = None) -> DeploymentHandle:
    """A handle to deployment `deployment_name` of application `app_name` (Ray 2.x). Without
    `app_name`: inside a replica, the replica's own application; elsewhere the default
    application, else the one application that has the deployment.
    DeploymentNotFoundError (a KeyError) if there is none. Called on the runtime's loop (async
    code in a replica), where a lookup would block it, the handle is made without one (a
    call to a missing deployment then fails with `serve.ServeError`)."""
    if app_name is None:
        ctx = current_context.get() or process_context()
        if ctx is not None:
            app_name = ctx.app_name
    client = startup.connected_client()
    if client.rt.in_loop_thread():
        return DeploymentHandle(deployment_name, app_name or DEFAULT_APP)
    return DeploymentHandle(deployment_name, _app_of(deployment_name, app_name, startup.running_client().targets()))


def get_handle(name: str, missing_ok: bool = False, sync: bool = True) -> DeploymentHandle | RayServeHandle:
    """Ray Serve 1.x: a handle to deployment `name` (as `get_deployment` finds it).
    `sync=False` gives a 1.x async handle (`ref = await handle.remote(...)`, then `await ref`).
    `missing_ok=True` makes the handle without checking that the deployment exists."""
    if not isinstance(sync, bool):
        raise TypeError(f"serve.get_handle(sync=...) takes True or False, got {sync!r}")
    app = DEFAULT_APP if missing_ok else _app_of(name, None, startup.running_client().targets())
    handle = DeploymentHandle(name, app)
    return handle if sync else RayServeHandle(handle)


def _app_of(name: str, app_name: str | None, targets: dict[DeploymentId, DeploymentTarget]) -> str:
    """The application whose deployment `name` a lookup means (see get_deployment_handle)."""
    if app_name is not None:
        if DeploymentId(app_name, name) in targets:
            return app_name
        have = sorted(d.name for d in targets if d.app == app_name)
        raise DeploymentNotFoundError(f"there is no deployment {name!r} in application {app_name!r}; "
                                      f"it has: {have or 'no deployments (no such application)'}")
    apps = sorted(d.app for d in targets if d.name == name)
    if DEFAULT_APP in apps or len(apps) == 1:
        return DEFAULT_APP if DEFAULT_APP in apps else apps[0]
    if apps:
        raise DeploymentNotFoundError(f"deployment {name!r} is in several applications ({apps}): give app_name=")
    raise DeploymentNotFoundError(f"there is no deployment named {name!r}; deployed: "
                                  f"{sorted(str(d) for d in targets) or 'none'}")


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
    return Deployment(func_or_class, opts, target.app)


def list_deployments() -> dict[str, Deployment]:
    """Every deployment by name (1.x); where two applications use one name, the default
    application's."""
    targets = sorted(startup.running_client().targets().values(), key=lambda t: t.app == DEFAULT_APP)
    return {t.name: _deployment_of(t) for t in targets}


def get_deployment(name: str) -> Deployment:
    """The deployment `name` (1.x): the default application's, else the one application's
    that has it; KeyError if none (or several, naming them) has it."""
    targets = startup.running_client().targets()
    found = [t for dep_id, t in targets.items() if dep_id.name == name]
    ours = [t for t in found if t.app == DEFAULT_APP]
    if len(ours) == 1 or len(found) == 1:
        return _deployment_of((ours or found)[0])
    if found:
        raise KeyError(f"deployment {name!r} is in several applications ({sorted(t.app for t in found)}): use "
                       "serve.get_deployment_handle(name, app_name=...)")
    raise KeyError(f"there is no deployment named {name!r}; deployed: {sorted(d.name for d in targets)}")
