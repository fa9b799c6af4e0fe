"""What the controller tells about a deployment: its status entry and its replica set."""

from __future__ import annotations

from typing import Any

from ..messages import ReplicaInfo, ReplicaSet
from .deployment_state import DeploymentState

__all__ = ["deployment_status", "replica_set_of"]


def deployment_status(s: DeploymentState) -> dict[str, Any]:
    """A deployment's entry in `serve.status()`."""
    return {
        "status": s.status, "message": s.message, "replicas": s.counts(),
        "target_replicas": s.desired, "version": s.target.version, "route_prefix": s.target.route_prefix,
        "replica_details": [{"replica_id": str(r.replica_id), "state": r.state, "version": r.version,
                             "actor_id": r.handle.actor_id.hex} for r in s.replicas.values()],
    }


def replica_set_of(s: DeploymentState) -> ReplicaSet:
    """What routers of the deployment need: its running replicas and limits."""
    cfg = s.target.config
    return ReplicaSet(
        s.target.id,
        tuple(ReplicaInfo(r.replica_id, r.handle, cfg.max_ongoing_requests) for r in s.running()),
        cfg.max_queued_requests,
        _metrics_interval(s),
    )


def _metrics_interval(s: DeploymentState) -> float | None:
    """How often routers should report load: None without autoscaling."""
    cfg = s.target.config.autoscaling_config
    if cfg is None:
        return None
    return min(cfg.metrics_interval_s, 1.0)
