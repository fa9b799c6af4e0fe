"""What the controller keeps in the head's KV so that a restarted controller takes over.

One KV value per deployment (`deployment_record_key`): a `DeploymentRecord` with its target,
whether it is being deleted, and each replica's identity, version, state and whether it runs
the target's `user_config`. It is written when that deployment's target or replica
membership changes (`record_members` is what decides) and deleted once the deployment is
gone. One more value (`SETTINGS_KEY`) holds the HTTP options and Serve's settings. So no
value is ever the sum of all deployments: each is about one target's size, and
`check_record_size` refuses at deploy a target whose record could not be stored
(`DeploymentTooLargeError`, before anything changes).

Replica entries carry a flag, not a copy, of the `user_config` they run: a record holds the
config once whatever the number of replicas (a recovered replica that did not run the
target's config is reconfigured).

`Checkpoint` / `ReplicaRecord` are the old format, one value for everything under
`CHECKPOINT_KEY`; they are still read (`legacy_records`), so a controller of this version
takes over from an older one. Invariant of the layout: if the old value exists and
`SETTINGS_KEY` does not, the old value is the truth (an upgrade not finished); otherwise
the records are (the settings are written after every record converted from the old value,
and only then is the old value deleted).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

from .._config import HTTPOptions
from ..exceptions import DeploymentTooLargeError
from ..messages import DeploymentId, DeploymentTarget, ReplicaId, ReplicaState, ServeSettings
from .deployment_state import DeploymentState

__all__ = ["Checkpoint", "DeploymentRecord", "ReplicaEntry", "ReplicaRecord", "SettingsRecord", "check_record_size",
           "legacy_records", "record_members"]

_NO_SETTINGS = ServeSettings()
_REPLICA_ROOM = 2  # a record's room for replicas, per replica wanted: a roll-out runs old and new side by side


@dataclass(frozen=True, slots=True)
class ReplicaEntry:
    replica_id: ReplicaId
    version: str
    state: ReplicaState
    config_applied: bool  # it runs its deployment's target user_config


@dataclass(frozen=True, slots=True)
class DeploymentRecord:
    target: DeploymentTarget
    deleting: bool
    replicas: tuple[ReplicaEntry, ...]

    @classmethod
    def of(cls, s: DeploymentState) -> DeploymentRecord:
        wanted = s.target.config.user_config
        return cls(s.target, s.deleting, tuple(ReplicaEntry(r.replica_id, r.version, r.state, r.user_config is wanted)
                                               for r in s.replicas.values()))

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> DeploymentRecord:
        return _load(blob, DeploymentRecord)


@dataclass(frozen=True, slots=True)
class SettingsRecord:
    http_options: HTTPOptions
    settings: ServeSettings = _NO_SETTINGS

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> SettingsRecord:
        return _load(blob, SettingsRecord)


def record_members(s: DeploymentState) -> tuple:
    """What a deployment's record follows: its target (each new one), deletion, and its
    replicas' identities, versions, states and whether they run the target's user_config.
    Not health checks or load, so a settled deployment is not written again."""
    wanted = s.target.config.user_config
    return (s.generation, s.deleting, tuple(sorted((str(r.replica_id), r.version, r.state, r.user_config is wanted)
                                                   for r in s.replicas.values())))


def check_record_size(target: DeploymentTarget, max_bytes: int) -> None:
    """Refuse (DeploymentTooLargeError) a target whose record, with room for its replicas,
    would be over the head's cap on a KV value: it could never be saved, so a restarted
    controller would lose it (and its replicas' constructor arguments, which carry the
    same code and user_config, would be refused by the head too)."""
    cfg = target.config
    wanted = max(cfg.num_replicas, cfg.autoscaling_config.max_replicas if cfg.autoscaling_config else 0, 1)
    example = ReplicaEntry(ReplicaId(target.id, "ffffff"), target.version, ReplicaState.STARTING, True)
    size = len(DeploymentRecord(target, False, ()).dumps()) + _REPLICA_ROOM * wanted * len(pickle.dumps(example))
    if size <= max_bytes:
        return
    config = len(pickle.dumps(cfg.user_config, protocol=pickle.HIGHEST_PROTOCOL))
    what = f"deployment {target.name!r} of application {target.app!r}"
    cap = (f"the head stores at most {max_bytes:,} bytes per value ($ZEROSERVE_HEAD_MAX_BLOB_BYTES), and the "
           f"controller must keep each deployment's record there to survive a restart")
    if config * 2 > size:
        raise DeploymentTooLargeError(
            f"{what}: user_config too large: {config:,} bytes (its whole record {size:,} bytes); {cap}. Load big data "
            "in the constructor instead (pass a path or a URL in user_config), or raise the cap")
    raise DeploymentTooLargeError(
        f"{what} is too large: its record takes {size:,} bytes (code and bind arguments {len(target.code):,}, "
        f"user_config {config:,}, room for {_REPLICA_ROOM * wanted} replicas); {cap}. Load big data in the "
        "constructor instead of passing it to .bind(...), or raise the cap")


# -- the old format (one value for every deployment) ---------------------------------------

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

    def dumps(self) -> bytes:
        return pickle.dumps(self)

    @staticmethod
    def loads(blob: bytes) -> Checkpoint:
        return _load(blob, Checkpoint)


def legacy_records(blob: bytes) -> tuple[SettingsRecord, list[DeploymentRecord]]:
    """An old single-value checkpoint as the records of today."""
    old = Checkpoint.loads(blob)
    records = []
    for t in old.targets:
        entries = tuple(ReplicaEntry(r.replica_id, r.version, r.state, r.user_config == t.config.user_config)
                        for r in old.replicas.get(t.id, ()))
        records.append(DeploymentRecord(t, t.id in old.deleting, entries))
    return SettingsRecord(old.http_options, old.settings), records


def _load(blob: bytes, kind: type) -> Any:
    value = pickle.loads(blob)
    if not isinstance(value, kind):
        raise TypeError(f"a controller record holds a {type(value).__name__}, not a {kind.__name__}")
    return value
