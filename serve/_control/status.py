"""What the controller tells about a deployment: its status entry, its replica set, and
why it is not ready yet.

A deployment's `progress` (in `serve.status()`, and what deploys print while they wait)
says, for each replica not running yet, why: waiting for resources (with the demand) on any
node, its constructor running for N s, its `reconfigure(user_config)` running, or the error
the last start failed with (retried after a back-off).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..messages import ReplicaInfo, ReplicaSet
from .deployment_state import DeploymentState
from .replicas import STARTING, Replica

__all__ = ["NONE_WANTED", "app_import_path", "deployment_status", "gist", "none_wanted", "progress", "replica_set_of", "waiting_reason"]

_SHOWN = 3  # replicas named in a progress line; the rest are counted


def deployment_status(s: DeploymentState, now: float | None = None) -> dict[str, Any]:
    """A deployment's entry in `serve.status()` (`now`: the controller's clock, for the
    reasons of replicas still starting)."""
    return {
        "status": s.status, "message": s.message or (NONE_WANTED if none_wanted(s) else ""), "replicas": s.counts(),
        "target_replicas": s.desired, "version": s.target.version, "route_prefix": s.target.route_prefix,
        "import_path": s.target.import_path or None,
        "replica_details": [{"replica_id": str(r.replica_id), "state": r.state, "version": r.version,
                             "actor_id": r.handle.actor_id.hex, **r.meta,
                             **({"waiting": waiting_reason(s, r, now)} if now is not None and r.state == STARTING
                                else {})} for r in s.replicas.values()],
        "progress": progress(s, now) if now is not None else "",
    }


def app_import_path(entries: Iterable[dict[str, Any]]) -> str | None:
    """An application's import path: its ingress's (the one of its deployment entries with one)."""
    return next((d["import_path"] for d in entries if d.get("import_path")), None)


def demand(s: DeploymentState) -> str:
    """The resources each replica asks for, as `{CPU: 1, GPU: 1}` ("" for none)."""
    options = s.target.config.actor_options
    wanted: dict[str, Any] = {}
    if options.get("num_cpus"):
        wanted["CPU"] = options["num_cpus"]
    if options.get("num_gpus"):
        wanted["GPU"] = options["num_gpus"]
    wanted.update(options.get("resources") or {})
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in wanted.items()) + "}" if wanted else ""


_PHASES = {"lifespan": "the ingress app's startup", "reconfigure": "reconfigure(user_config)",
           "health_check": "the first health check"}


def waiting_reason(s: DeploymentState, r: Replica, now: float) -> str:
    """Why replica `r` (STARTING) is not running yet."""
    age = max(0.0, now - r.started_at)
    p = r.placement
    if p is None:
        return f"starting for {age:.0f} s"
    if not p.placed:
        wanted = demand(s)
        return (f"waiting for resources {wanted} on any node for {age:.0f} s" if wanted else
                f"waiting to be placed on a node for {age:.0f} s")
    where = f" on node {p.node}" if p.node else ""
    if not p.alive or p.phase == "constructor":
        return f"constructor running for {max(0.0, now - (r.placed_at or r.started_at)):.0f} s{where}"
    if p.phase in _PHASES:
        return f"{_PHASES[p.phase]} running{where} ({age:.0f} s since start)"
    if r.user_config is not None:
        return f"reconfigure(user_config) running{where} ({age:.0f} s since start)"
    return f"constructed{where}, answering its readiness check ({age:.0f} s since start)"


def progress(s: DeploymentState, now: float) -> str:
    """One line on a deployment not ready yet: its replicas' reasons, and the last start's
    error if starts fail ("" when nothing is pending)."""
    starting = sorted((r for r in s.replicas.values() if r.state == STARTING), key=lambda r: r.started_at)
    parts = [f"{r.replica_id} {waiting_reason(s, r, now)}" for r in starting[:_SHOWN]]
    if len(starting) > _SHOWN:
        parts.append(f"{len(starting) - _SHOWN} more starting")
    if s.start_failures and s.message:
        parts.append(f"retrying after error ({s.start_failures} failed start{'s' if s.start_failures > 1 else ''}): "
                     f"{gist(s.message)}")
    return "; ".join(parts)


def gist(message: str, limit: int = 300) -> str:
    """A message on one line: its first line, and its last if it holds a traceback (the
    exception itself)."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    text = lines[0]
    if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
        text = f"{text} ... {lines[-1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def replica_set_of(s: DeploymentState) -> ReplicaSet:
    """What routers of the deployment need: its running replicas and limits."""
    cfg = s.target.config
    return ReplicaSet(
        s.target.id,
        tuple(ReplicaInfo(r.replica_id, r.handle, cfg.max_ongoing_requests, model_ids=r.model_ids,
                          max_models=r.max_models) for r in s.running()),
        cfg.max_queued_requests,
        _metrics_interval(s),
        s.methods,
        unavailable(s),
    )


def unavailable(s: DeploymentState) -> str:
    """Why no call to the deployment can be served ("" if one can): num_replicas=0 without
    autoscaling, or no replica runs and none can start (UNHEALTHY, e.g. at zero)."""
    if none_wanted(s):
        return NONE_WANTED
    if s.broken and not s.deleting and not s.running():
        return s.message or "it cannot start a replica"
    return ""


def none_wanted(s: DeploymentState) -> bool:
    """num_replicas=0 and no autoscaling: nothing will ever serve the deployment's calls."""
    return s.desired == 0 and s.autoscaler is None and not s.deleting


NONE_WANTED = ("num_replicas is 0 and there is no autoscaling_config: calls to it fail at once "
               "(give it num_replicas >= 1 or an autoscaling_config to serve)")


def _metrics_interval(s: DeploymentState) -> float | None:
    """How often routers should report load: None without autoscaling."""
    cfg = s.target.config.autoscaling_config
    if cfg is None:
        return None
    return min(cfg.metrics_interval_s, 1.0)
