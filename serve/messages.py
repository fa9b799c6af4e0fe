"""Messages of the serving layer: what a deployment should be, and where its replicas are.

Frozen, slotted values; the controller keeps `DeploymentTarget`s (and checkpoints them),
routers receive `ReplicaSet`s by long poll.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors import ActorHandle

from ._config import DeploymentConfig

__all__ = ["DeploymentTarget", "ReplicaInfo", "ReplicaSet", "DEFAULT_APP", "HTTP_METHOD"]

DEFAULT_APP = "default"
HTTP_METHOD = "__serve_http__"  # the replica entry the proxy calls with an HTTPRequest


@dataclass(frozen=True, slots=True)
class DeploymentTarget:
    """The desired state of one deployment, as `deploy()` / `serve.run()` sent it."""

    name: str
    app: str
    version: str
    code: bytes  # cloudpickled (function or class, init_args, init_kwargs)
    config: DeploymentConfig
    route_prefix: str | None
    is_function: bool
    version_given: bool = False  # the user set `version` (so redeploying it is a no-op)


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A running replica as routers see it."""

    replica_id: str  # "<deployment>#<tag>"
    handle: ActorHandle
    max_ongoing_requests: int
    node_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicaSet:
    """Answer to a router's long poll: the replicas of one deployment at `version`."""

    deployment: str
    version: int
    replicas: tuple[ReplicaInfo, ...]
    max_queued_requests: int = -1
    exists: bool = True
    extra: Any = None
