"""Starting and stopping Serve on a cluster: the controller actor, its proxies, its clean-up.

`start()` creates the controller (named, in namespace "serve", on the head node) or
connects to the one running, and returns once its HTTP proxies are ready, printing their
progress. `running_client()` is what every other driver call uses: this process's
`ServeClient`, with Serve started first if it is not running (as Ray Serve does).
`stop()` is the orderly shutdown, with a fallback that kills what a failed shutdown left.
`follow_replica_output()` echoes the replicas' output to this driver (`serve.run`,
`zeroserve serve run`), each line prefixed with the replica's log name and pid.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Any

import actors
from actors.messages import ActorState
from actors.system import HEAD_NODE_RESOURCE, current_runtime, follow_output, local_cluster

from .._config import HTTPOptions
from .._control.controller import ServeController
from .._control.proxy_state import ProxyFailure
from .._data import tracing
from .._data.client import ServeClient, say
from .._model import reject_unknown
from .._names import (
    CHECKPOINT_KEY,
    CONTROLLER_NAME,
    PROXY_PREFIX,
    RECORDS_PREFIX,
    REPLICA_PREFIX,
    SERVE_NAMESPACE,
    STATUS_KEY,
)
from .._obs_config import LoggingConfig, TracingConfig
from ..messages import ProxyStatus

__all__ = ["base_url", "connected_client", "follow_replica_output", "http_base_url", "running_client", "shutdown",
           "start"]

PROXY_TIMEOUT_S = 60.0
SHUTDOWN_BUDGET_S = 60.0  # the controller's, in total, to drain and stop the proxies and delete the deployments
SHUTDOWN_TIMEOUT_S = SHUTDOWN_BUDGET_S + 30.0  # the driver's wait; then it kills what is left itself


def connected_client() -> ServeClient:
    """This process's `ServeClient`, connected to the cluster (Serve may not be running)."""
    actors.init()  # no-op when connected; an embedded cluster otherwise, as Ray Serve does
    return ServeClient.current()


_PROXY_LOCATIONS = {"HeadOnly": "HeadOnly", "EveryNode": "EveryNode", "NoServer": "NoServer", "Disabled": "NoServer"}


def start(detached: bool = False, http_options: Any = None, logging_config: Any = None, tracing_config: Any = None,
          proxy_location: Any = None, grpc_options: Any = None, dedicated_cpu: bool = False,
          **unknown: Any) -> actors.ActorHandle:
    """Start Serve on the cluster (or connect to the Serve already running there); returns
    once the controller and its HTTP proxies (one on the head node, or one per node for
    EveryNode) are ready.

    `logging_config` (a dict or `serve.LoggingConfig`): how the controller and the proxies
    log, and every deployment's default; `tracing_config` (a dict or `serve.TracingConfig`):
    OpenTelemetry tracing of requests, in Serve's processes and in this one.
    `proxy_location` (Ray 2.x): `http_options.location` ("Disabled": "NoServer").
    `dedicated_cpu` (Ray 1.x) is accepted and changes nothing (the controller takes no CPU);
    `grpc_options` only as None (there is no gRPC proxy). Any other keyword is an error."""
    reject_unknown(unknown, _START_OPTIONS, "serve.start()")
    if grpc_options is not None:
        raise ValueError("serve.start(grpc_options=...) is not supported: zeroserve has no gRPC proxy; serve over "
                         "HTTP (http_options) or call deployments through handles")
    http = HTTPOptions.of(http_options)  # wrong options fail here, before anything starts
    if proxy_location is not None:
        http = _with_proxy_location(http, proxy_location)
    logging_cfg = LoggingConfig.of(logging_config)
    tracing_cfg = TracingConfig.of(tracing_config)
    if tracing_cfg is not None:
        tracing.configure(tracing_cfg)  # this driver's handle calls are traced too (fails here without the SDK)
    client = connected_client()
    controller = client.controller_or_none()
    if controller is not None:
        return controller
    lifetime = "detached" if detached else None
    # The controller lives on the head node (as the head's KV it checkpoints to): a worker
    # node dying never takes it, and its routes, down with it. By the head node's resource,
    # not its node id: a head node restarted (a pod rescheduled) is a new node, and the
    # controller restarts there.
    cls = actors.remote(name=CONTROLLER_NAME, namespace=SERVE_NAMESPACE, get_if_exists=True, lifetime=lifetime,
                        max_concurrency=10_000, max_restarts=-1, log_name="controller",
                        resources={HEAD_NODE_RESOURCE: 0.001})(ServeController)
    cls.remote(detached, http, logging_cfg, tracing_cfg)
    client.forget_controller()
    client.status()  # up and recovered
    if http.location != "NoServer":
        try:
            _wait_proxies(client, http)
        except (Exception, asyncio.CancelledError):
            try:
                stop(client)
            except Exception as e:  # the start's own error is the one to report
                _warn(f"could not stop the Serve that failed to start: {type(e).__name__}: {e}")
            raise
    controller = client.controller_or_none()
    assert controller is not None
    return controller


def follow_replica_output() -> None:
    """Echo every replica's output (stdout, stderr) to this driver, as its own actors' is:
    `(replica_<app>_<deployment>_<tag> pid=N) line`. (Not from inside an actor: it echoes nothing.)"""
    rt = current_runtime()
    if rt is not None and rt.role == "driver":
        follow_output(SERVE_NAMESPACE, REPLICA_PREFIX, rt)


_START_OPTIONS = tuple(inspect.signature(start).parameters)[:-1]


def _with_proxy_location(http: HTTPOptions, proxy_location: Any) -> HTTPOptions:
    """`http` with Ray 2.x's `proxy_location` as its location; ValueError if they disagree."""
    location = getattr(proxy_location, "value", proxy_location)  # an enum's value too
    if location not in _PROXY_LOCATIONS:
        raise ValueError(f"proxy_location must be one of {', '.join(map(repr, _PROXY_LOCATIONS))}, got "
                         f"{proxy_location!r}")
    location = _PROXY_LOCATIONS[location]
    if "location" in http.model_fields_set and http.location != location:
        raise ValueError(f"proxy_location={proxy_location!r} disagrees with http_options location "
                         f"{http.location!r}; give only one")
    return HTTPOptions.parse({**http.given(), "location": location})


def running_client() -> ServeClient:
    """This process's client of the running Serve, started first if there is none."""
    client = connected_client()
    if client.controller_or_none() is None:
        start()
    return client


def _wait_proxies(client: ServeClient, http: HTTPOptions) -> None:
    """Until every proxy the controller runs is HEALTHY; printing their progress."""
    last = [""]

    def ready(st: dict[str, Any]) -> bool:
        proxies = st.get("proxies", {})
        healthy = [p for p in proxies.values() if p["state"] == ProxyStatus.HEALTHY]
        line = f"HTTP proxies ready: {len(healthy)}/{len(proxies)} ({http.location})"
        if line != last[0]:
            say(line)
            last[0] = line
        failed = [p for p in proxies.values() if p["state"] == ProxyStatus.UNHEALTHY]
        if failed:
            raise RuntimeError(_proxy_failure(failed[0], http))
        if proxies and len(healthy) == len(proxies):
            for p in sorted(healthy, key=lambda p: p["node_ip"]):
                say(f"HTTP proxy listening on {p['url']} (node {p['node_id']})")
            return True
        return False

    if not client.watch_status(ready, PROXY_TIMEOUT_S):
        proxies = client.status().get("proxies", {})
        raise RuntimeError(f"the HTTP proxies were not ready after {PROXY_TIMEOUT_S:.0f}s: {last[0]}"
                           + ("" if proxies else " (no alive node to run one on; see `zeroserve status`)"))


def _proxy_failure(proxy: dict[str, Any], http: HTTPOptions) -> str:
    """What to tell the user about a proxy that failed to start, by the kind of failure."""
    host = proxy["node_ip"] if http.host == "node" else http.host
    message, raw = proxy["message"], proxy.get("failure")
    failure = ProxyFailure(raw) if raw is not None else None
    if failure is ProxyFailure.MIDDLEWARE:  # the proxy's constructor: a wrong middleware
        return f"the HTTP proxy could not start: http_options {message.strip().splitlines()[0]}"
    if failure is ProxyFailure.PORT_IN_USE:
        hint = ("; with several nodes on one machine, host='node' binds each proxy to its node's IP"
                if http.location == "EveryNode" and http.host != "node" else "")
        return (f"the HTTP proxy could not listen on {host}:{http.port} on node {proxy['node_id']}: the port is "
                f"in use ({message}); pick another http_options port, or location='NoServer'{hint}")
    hint = ""
    if failure is ProxyFailure.ADDRESS_UNAVAILABLE:
        hint = (f"; {host!r} is not an address of that node: use one of its own addresses, '0.0.0.0' for "
                "all of them, or 'node' for each node's own IP")
    return f"the HTTP proxy on node {proxy['node_id']} ({proxy['node_ip']}) failed to start: {message}{hint}"


def shutdown() -> None:
    """Delete every deployment and stop the controller."""
    if not actors.is_initialized():
        return
    client = ServeClient.current()
    try:
        if client.controller_or_none() is not None:
            stop(client)
    except actors.ClusterUnavailableError:
        if local_cluster() is None:
            raise
        # This driver's embedded cluster is gone (a terminal's Ctrl-C reaches its processes
        # too), and Serve with it: nothing is left to stop.
    finally:
        client.close()


def stop(client: ServeClient) -> None:
    """The controller's orderly shutdown (drain, delete the deployments, stop the proxies),
    then the controller killed. If that shutdown fails or outlasts SHUTDOWN_TIMEOUT_S,
    the driver itself kills the proxies and replicas left and drops the checkpoint (so no
    detached proxy keeps the port and no later `serve.start` brings the deployments back)."""
    controller = client.controller_or_none()
    if controller is None:
        return
    try:
        clean = client.call("shutdown", SHUTDOWN_BUDGET_S, timeout=SHUTDOWN_TIMEOUT_S) is True
        problem = "did not delete every deployment in time"
    except (Exception, asyncio.CancelledError) as e:  # a timeout, the controller died (or is stopping), or it raised
        clean, problem = False, f"failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    try:
        actors.kill(controller)
    except actors.ActorDiedError:
        pass  # gone already
    client.forget_controller()
    if not clean:
        killed = _kill_serve_actors()
        _warn(f"the controller's shutdown {problem}; killed it and {killed} proxies and replicas left")


def _kill_serve_actors() -> int:
    """Kill every live proxy and replica actor of Serve, found by name in the head's actor
    table, and delete the controller's checkpoint (every record); returns how many were killed."""
    rt = current_runtime()
    assert rt is not None

    async def kill_all() -> int:
        killed = 0
        for info in await rt.head.list_actors():
            if (info.namespace == SERVE_NAMESPACE and (info.name or "").startswith((PROXY_PREFIX, REPLICA_PREFIX))
                    and info.state is not ActorState.DEAD):
                killed += bool(await rt.head.kill_actor(info.actor_id, True))
        for key in (CHECKPOINT_KEY, STATUS_KEY, *await rt.head.kv_keys(RECORDS_PREFIX)):
            await rt.head.kv_delete(key)
        return killed

    return rt.run_threadsafe(kill_all)


def _warn(text: str) -> None:
    print(f"serve: warning: {text}", file=sys.stderr, flush=True)


def http_base_url() -> str | None:
    """Where HTTP requests go (see `base_url`), for the Serve running now; None with no proxies."""
    try:
        st = ServeClient.current().status()
    except Exception:
        st = {}
    return base_url(st.get("http_options") or {}, st.get("proxies"))


def base_url(http_options: dict[str, Any], proxies: dict[str, Any] | None) -> str | None:
    """The URL of a proxy, with http_options root_path: a running proxy's own (the head's
    for HeadOnly, else the first by IP), else the configured host and port; None for NoServer."""
    default = HTTPOptions()
    if http_options.get("location", default.location) == "NoServer":
        return None
    root_path = http_options.get("root_path", default.root_path)
    urls = sorted((p["node_ip"], p["url"]) for p in (proxies or {}).values() if p.get("url"))
    if urls:
        return urls[0][1] + root_path
    host, port = http_options.get("host", default.host), http_options.get("port", default.port)
    return f"http://{'127.0.0.1' if host == 'node' else host}:{port}{root_path}"
