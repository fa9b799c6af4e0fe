"""What the controller writes to the head's KV after every change, and reads back after a restart.

A `Checkpoint` holds the desired state (targets, which are being deleted, the HTTP options)
(and Serve's settings) and each replica's identity, version, applied `user_config` and state, so a restarted
controller takes every replica back as it was (see `recovery`). `membership` is the cheap
part that decides whether a new checkpoint is due: it changes with targets and replica
membership or state, not with health checks or load.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._config import HTTPOptions
from ..messages import DeploymentId, DeploymentTarget, ReplicaId, ReplicaState, ServeSettings
from .deployment_state import DeploymentState

__all__ = ["Checkpoint", "ReplicaRecord", "membership"]

_NO_SETTINGS = ServeSettings()


@dataclass(frozen=True, slots=True)
class ReplicaRecord:
    replica_id: ReplicaId
    version: str
    user_config: Any
    state: ReplicaState


@dataclass(frozen=True, slots=True)
class Checkpoint:
    targets: tuple[DeploymentTarget, ...]
    deleting: frozenset[DeploymentId]
    replicas: dict[DeploymentId, tuple[ReplicaRecord, ...]]
    http_options: HTTPOptions
    settings: ServeSettings = _NO_SETTINGS

    @classmethod
    def of(cls, deployments: Mapping[DeploymentId, DeploymentState], http_options: HTTPOptions,
           settings: ServeSettings = _NO_SETTINGS) -> "Checkpoint":
        return cls(
            targets=tuple(s.target for s in deployments.values()),
            deleting=frozenset(n for n, s in deployments.items() if s.deleting),
            replicas={n: tuple(ReplicaRecord(r.replica_id, r.version, r.user_config, r.state)
                               for r in s.replicas.values()) for n, s in deployments.items()},
            http_options=http_options,
            settings=settings,
        )

    def dumps(self) -> bytes:
        return pickle.dumps(self)

    @staticmethod
    def loads(blob: bytes) -> "Checkpoint":
        checkpoint = pickle.loads(blob)
        if not isinstance(checkpoint, Checkpoint):
            raise TypeError(f"the controller checkpoint holds a {type(checkpoint).__name__}, not a Checkpoint")
        return checkpoint


def membership(deployments: Mapping[DeploymentId, DeploymentState]) -> tuple:
    """What a checkpoint must follow: targets' versions, deletions, replicas and their states."""
    return tuple(sorted(
        (str(dep_id), s.target.version, s.deleting,
         tuple(sorted((str(r.replica_id), r.version, r.state) for r in s.replicas.values())))
        for dep_id, s in deployments.items()))
