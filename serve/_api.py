"""The public functions of `serve`: start, run, delete, shutdown, status, lookups.

Drivers talk to the controller actor; `serve.start()` creates it (named, in namespace
"serve") or connects to the running one. Waits that users see (a roll-out) print
progress lines to stderr as the replica counts change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pickle
import sys
import time
from typing import Any

import actors
from actors.messages import ActorState
from actors.system import current_runtime, local_cluster

from ._config import DEFAULT, HTTPOptions, validate_route_prefix
from ._controller import (
    CHECKPOINT_KEY,
    CONTROLLER_NAME,
    SERVE_NAMESPACE,
    STATUS_KEY,
    ServeController,
    replica_actor_name,
)
from ._deployment import Application, Deployment
from ._graph import compile_graph, is_graph
from ._handle import DeploymentHandle
from ._proxy_state import PROXY_PREFIX
from .exceptions import DeploymentUnhealthyError
from .messages import DeploymentTarget

__all__ = ["start", "run", "delete", "shutdown", "status", "list_deployments", "get_deployment",
           "app_targets", "deploy_targets", "delete_deployments", "http_base_url", "base_url"]

_DEPLOY_TIMEOUT_S = float(os.environ.get("ZEROSERVE_DEPLOY_TIMEOUT_S", "300"))
_PROXY_TIMEOUT_S = 60.0
_SHUTDOWN_BUDGET_S = 60.0  # the controller's, in total, to drain and stop the proxies and delete the deployments
_SHUTDOWN_TIMEOUT_S = _SHUTDOWN_BUDGET_S + 30.0  # the driver's wait; then it kills what is left itself


def _controller_or_none() -> actors.ActorHandle | None:
    actors.init()  # no-op when connected; an embedded cluster otherwise, as Ray Serve does
    try:
        return actors.get_actor(CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None


def start(detached: bool = False, http_options: Any = None, **_ignored: Any) -> actors.ActorHandle:
    """Start Serve on the cluster (or connect to the Serve already running there); returns
    once the controller and its HTTP proxies (one on the head node, or one per node for
    EveryNode) are ready."""
    http = HTTPOptions.of(http_options)  # wrong options fail here, before anything starts
    controller = _controller_or_none()
    if controller is not None:
        return controller
    lifetime = "detached" if detached else None
    # The controller lives on the head node (as the head's KV it checkpoints to): a worker
    # node dying never takes it, and its routes, down with it.
    head = next((n["node_id"] for n in actors.nodes() if n["is_head"] and n["alive"]), None)
    cls = actors.remote(name=CONTROLLER_NAME, namespace=SERVE_NAMESPACE, get_if_exists=True, lifetime=lifetime,
                        max_concurrency=10_000, max_restarts=-1, node_id=head)(ServeController)
    controller = cls.remote(detached, dataclasses.asdict(http))
    actors.get(controller.status.remote(), timeout=60)  # up and recovered
    if http.location != "NoServer":
        try:
            _wait_proxies(controller, http)
        except (Exception, asyncio.CancelledError):
            try:
                _stop_serve(controller)
            except Exception as e:  # the start's own error is the one to report
                _warn(f"could not stop the Serve that failed to start: {type(e).__name__}: {e}")
            raise
    return controller


def _wait_proxies(controller: actors.ActorHandle, http: HTTPOptions) -> None:
    """Until every proxy the controller runs is HEALTHY; printing their progress."""
    deadline = time.monotonic() + _PROXY_TIMEOUT_S
    last = None
    while True:
        proxies = actors.get(controller.status.remote(), timeout=60).get("proxies", {})
        ready = [p for p in proxies.values() if p["state"] == "HEALTHY"]
        line = f"HTTP proxies ready: {len(ready)}/{len(proxies)} ({http.location})"
        if line != last:
            _say(line)
            last = line
        failed = [p for p in proxies.values() if p["state"] == "UNHEALTHY"]
        if failed:
            p = failed[0]
            if "MiddlewareError: " in p["message"]:  # the proxy's constructor: a wrong middleware
                raise RuntimeError(f"the HTTP proxy could not start: http_options "
                                   f"{p['message'].rsplit('MiddlewareError: ', 1)[-1].strip()}")
            raise RuntimeError(_proxy_failure(p, http))
        if proxies and len(ready) == len(proxies):
            for p in sorted(ready, key=lambda p: p["node_ip"]):
                _say(f"HTTP proxy listening on {p['url']} (node {p['node_id']})")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the HTTP proxies were not ready after {_PROXY_TIMEOUT_S:.0f}s: "
                               f"{len(ready)}/{len(proxies)} ready"
                               + ("" if proxies else " (no alive node to run one on; see `zeroserve status`)"))
        time.sleep(0.05)


def _proxy_failure(proxy: dict[str, Any], http: HTTPOptions) -> str:
    """What to tell the user about a proxy that failed to start: a port in use names the
    port to change; anything else is reported as it is."""
    host = proxy["node_ip"] if http.host == "node" else http.host
    message, text = proxy["message"], proxy["message"].lower()
    if "address already in use" in text or "address in use" in text or "eaddrinuse" in text:
        hint = ("; with several nodes on one machine, host='node' binds each proxy to its node's IP"
                if http.location == "EveryNode" and http.host != "node" else "")
        return (f"the HTTP proxy could not listen on {host}:{http.port} on node {proxy['node_id']}: the port is "
                f"in use ({message}); pick another http_options port, or location='NoServer'{hint}")
    hint = ""
    if "cannot assign requested address" in text or "eaddrnotavail" in text:
        hint = (f"; {host!r} is not an address of that node: use one of its own addresses, '0.0.0.0' for "
                "all of them, or 'node' for each node's own IP")
    return f"the HTTP proxy on node {proxy['node_id']} ({proxy['node_ip']}) failed to start: {message}{hint}"


def _controller() -> actors.ActorHandle:
    controller = _controller_or_none()
    if controller is None:
        controller = start()
    return controller


def _say(text: str) -> None:
    if os.environ.get("ZEROSERVE_QUIET") != "1":
        print(f"serve: {text}", file=sys.stderr, flush=True)


def deploy_targets(targets: list[DeploymentTarget], wait: bool = True) -> dict[str, bool]:
    """Send targets to the controller; returns {name: changed}. `wait`: until all are HEALTHY."""
    controller = _controller()
    changed = actors.get(controller.deploy.remote(targets), timeout=60)
    if not wait:
        return changed
    names = [t.name for t in targets]
    if not any(changed.values()):
        _say(f"{', '.join(names)}: unchanged (same version and config), nothing to do")
    _wait_healthy(controller, names)
    return changed


def _wait_healthy(controller: actors.ActorHandle, names: list[str]) -> None:
    deadline = time.monotonic() + _DEPLOY_TIMEOUT_S
    last = None
    while True:
        st = actors.get(controller.status.remote(), timeout=60)
        deps = {n: d for app in st["applications"].values() for n, d in app["deployments"].items() if n in names}
        line = "; ".join(f"{n} {d['replicas'].get('RUNNING', 0)}/{d['target_replicas']} running ({d['status']})"
                         for n, d in sorted(deps.items()))
        if line != last:
            _say(line)
            last = line
        unhealthy = {n: d["message"] for n, d in deps.items() if d["status"] == "UNHEALTHY"}
        if unhealthy:
            raise DeploymentUnhealthyError("; ".join(f"deployment {n} is unhealthy: {m}" for n, m in unhealthy.items()))
        if len(deps) == len(names) and all(d["status"] == "HEALTHY" for d in deps.values()):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"deployments not ready after {_DEPLOY_TIMEOUT_S:.0f}s: {line} "
                               "(busy resources? see `zeroserve status`)")
        time.sleep(0.1)


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
    start(http_options=http or None)
    handle, targets = app_targets(target, name, route_prefix)
    deploy_targets(targets, wait=_wait)
    return handle


def app_targets(target: Application, name: str, route_prefix: Any = DEFAULT) -> tuple[DeploymentHandle,
                                                                                      list[DeploymentTarget]]:
    """The ingress handle and the deployment targets of an application; deploys nothing."""
    if is_graph(target):
        raise TypeError(f"{target!r} is a deployment graph node; a graph needs an ingress: DAGDriver.bind(graph) "
                        "with `from serve.drivers import DAGDriver`")
    targets: dict[str, DeploymentTarget] = {}
    handle = _collect(target, name, targets, route_prefix)
    return handle, list(targets.values())


def delete_deployments(names: list[str], timeout_s: float = 60.0) -> None:
    controller = _controller()
    actors.get(controller.delete.remote(names), timeout=60)
    actors.get(controller.wait_deleted.remote(names, timeout_s), timeout=timeout_s + 10)


def delete(name: str, _blocking: bool = True) -> None:
    """Delete an application (or, for 1.x programs, a deployment) by name."""
    controller = _controller()
    names = actors.get(controller.delete_app.remote(name), timeout=60)
    if not names:
        names = [name]
        actors.get(controller.delete.remote(names), timeout=60)
    if _blocking:
        actors.get(controller.wait_deleted.remote(names, 60.0), timeout=70)


def shutdown() -> None:
    """Delete every deployment and stop the controller."""
    if not actors.is_initialized():
        return
    try:
        controller = _controller_or_none()
        if controller is not None:
            _stop_serve(controller)
    except actors.ClusterUnavailableError:
        if local_cluster() is None:
            raise
        # This driver's embedded cluster is gone (a terminal's Ctrl-C reaches its processes
        # too), and Serve with it: nothing is left to stop.
    finally:
        rt = current_runtime()
        if rt is not None:
            rt.extensions.pop("serve_controller", None)
            for router in rt.extensions.pop("serve_routers", {}).values():
                rt.loop.call_soon_threadsafe(router.close)


def _stop_serve(controller: actors.ActorHandle) -> None:
    """The controller's orderly shutdown (drain, delete the deployments, stop the proxies),
    then the controller killed. If that shutdown fails or outlasts `_SHUTDOWN_TIMEOUT_S`,
    the driver itself kills the proxies and replicas left and drops the checkpoint (so no
    detached proxy keeps the port and no later `serve.start` brings the deployments back)."""
    try:
        clean = actors.get(controller.shutdown.remote(_SHUTDOWN_BUDGET_S), timeout=_SHUTDOWN_TIMEOUT_S) is True
        problem = "did not delete every deployment in time"
    except Exception as e:  # a timeout, the controller died, or its shutdown raised
        clean, problem = False, f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    _kill_quietly(controller)
    if not clean:
        killed = _kill_serve_actors()
        _warn(f"the controller's shutdown {problem}; killed it and {killed} proxies and replicas left")


def _kill_quietly(handle: actors.ActorHandle) -> None:
    try:
        actors.kill(handle)
    except actors.ActorDiedError:
        pass  # gone already


def _kill_serve_actors() -> int:
    """Kill every live proxy and replica actor of Serve, found by name in the head's actor
    table, and delete the controller's checkpoint; returns how many were killed."""
    prefixes = (PROXY_PREFIX, replica_actor_name(""))
    rt = current_runtime()
    infos = rt.run_threadsafe(lambda: rt.call_head("list_actors"))
    killed = 0
    for info in infos:
        if (info.namespace == SERVE_NAMESPACE and (info.name or "").startswith(prefixes)
                and info.state is not ActorState.DEAD):
            killed += bool(rt.run_threadsafe(lambda info=info: rt.call_head("kill_actor", info.actor_id, True)))
    for key in (CHECKPOINT_KEY, STATUS_KEY):
        rt.run_threadsafe(lambda key=key: rt.call_head("kv_delete", key))
    return killed


def _warn(text: str) -> None:
    print(f"serve: warning: {text}", file=sys.stderr, flush=True)


def status() -> dict[str, Any]:
    return actors.get(_controller().status.remote(), timeout=60)


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
    targets = actors.get(_controller().targets.remote(), timeout=60)
    return {name: _deployment_of(t) for name, t in targets.items()}


def get_deployment(name: str) -> Deployment:
    targets = actors.get(_controller().targets.remote(), timeout=60)
    if name not in targets:
        raise KeyError(f"there is no deployment named {name!r}; deployed: {sorted(targets)}")
    return _deployment_of(targets[name])


def http_base_url() -> str | None:
    """Where HTTP requests go (see `base_url`), for the Serve running now; None with no proxies."""
    try:
        st = status()
    except Exception:
        st = {}
    return base_url(st.get("http_options") or {}, st.get("proxies"))


def base_url(http_options: dict[str, Any], proxies: dict[str, Any] | None) -> str | None:
    """The URL of a proxy, with http_options root_path: a running proxy's own (the head's
    for HeadOnly, else the first by IP), else the configured host and port; None for NoServer."""
    if http_options.get("location") == "NoServer":
        return None
    root_path = http_options.get("root_path", "")
    urls = sorted((p["node_ip"], p["url"]) for p in (proxies or {}).values() if p.get("url"))
    if urls:
        return urls[0][1] + root_path
    host = http_options.get("host", "127.0.0.1")
    return f"http://{'127.0.0.1' if host == 'node' else host}:{http_options.get('port', 8000)}{root_path}"
