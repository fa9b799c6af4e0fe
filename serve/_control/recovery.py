"""A restarted controller takes over what its predecessor ran, so traffic never stops.

From the checkpoint's records (one per deployment, or an older controller's single value,
see `checkpoint`): every deployment's target, and each replica still alive (a named
actor) adopted in the state it had — a RUNNING one stays routed and is health-checked at
once, a STARTING one is asked `ready` again, a STOPPING one is drained again. Replicas
that died meanwhile are simply missing, and the reconcile loop replaces them. A record that
cannot be read is logged and skipped: the other deployments are still recovered. Proxies
still running are adopted, one per node; extras (and proxies of nodes that are gone) are
killed.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from .._config import HTTPOptions
from .._names import CHECKPOINT_KEY, DEPLOYMENT_RECORD_PREFIX, SETTINGS_KEY
from ..messages import DeploymentId, ServeSettings
from .checkpoint import DeploymentRecord, SettingsRecord, legacy_records
from .deployment_state import DeploymentState
from .io import ControllerIO
from .proxy_state import NodeView, ProxyState, slot_key

__all__ = ["Recovered", "adopt_proxies", "recover_deployments"]

log = logging.getLogger(__name__)
_READ_AT_ONCE = 32  # records asked of the head at once


@dataclass(frozen=True, slots=True)
class Recovered:
    deployments: dict[DeploymentId, DeploymentState]
    http_options: HTTPOptions | None  # None: no checkpoint (a fresh start keeps the options it was given)
    adopted: int
    settings: ServeSettings | None = None
    legacy: bool = False  # from an older controller's single value: to be written as records, then deleted
    stale_legacy: bool = False  # such a value is left over though the records are in force: to be deleted


async def load_records(io: ControllerIO) -> tuple[SettingsRecord | None, list[DeploymentRecord], bool, bool]:
    """The checkpoint: (settings, deployment records, whether they came from the old single
    value, whether such a value is left over beside the records)."""
    settings_blob = await io.kv_get(SETTINGS_KEY)
    if settings_blob is None:
        old = await io.kv_get(CHECKPOINT_KEY)
        if old is not None:
            settings, records = legacy_records(old)
            return settings, records, True, False
    records = []
    keys = sorted(await io.kv_keys(DEPLOYMENT_RECORD_PREFIX))
    blobs: list[bytes | None] = []
    for i in range(0, len(keys), _READ_AT_ONCE):
        blobs += await asyncio.gather(*(io.kv_get(k) for k in keys[i:i + _READ_AT_ONCE]))
    for key, blob in zip(keys, blobs, strict=True):
        if blob is None:
            continue  # deleted meanwhile
        try:
            records.append(DeploymentRecord.loads(blob))
        except Exception:
            log.exception("could not read the controller record %r; that deployment is not recovered", key)
    stale = settings_blob is not None and CHECKPOINT_KEY in await io.kv_keys(CHECKPOINT_KEY)
    return (SettingsRecord.loads(settings_blob) if settings_blob is not None else None), records, False, stale


async def recover_deployments(io: ControllerIO, now: float, version_base: int) -> Recovered:
    settings, records, legacy, stale = await load_records(io)
    deployments: dict[DeploymentId, DeploymentState] = {}
    adopted = 0
    for record in records:
        target = record.target
        state = DeploymentState(target, io.replicas, version_base=version_base)
        if record.deleting:
            state.delete()
        for entry in record.replicas:
            handle = await io.find_replica(entry.replica_id)
            if handle is None:
                continue
            applied = target.config.user_config if entry.config_applied else _NOT_APPLIED
            state.adopt(entry.replica_id, handle, entry.version, applied, now, entry.state)
            adopted += 1
        deployments[target.id] = state
    if records or settings is not None:
        log.info("recovered %d deployments and adopted %d running replicas%s", len(deployments), adopted,
                 " (from an older controller's checkpoint)" if legacy else "")
    return Recovered(deployments, settings.http_options if settings else None, adopted,
                     settings.settings if settings else None, legacy, stale)


class _NotApplied:
    """The user_config of a recovered replica that did not run its target's: it differs from
    every config, so the replica is reconfigured."""

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return "<a user_config other than the target's>"


_NOT_APPLIED = _NotApplied()


async def adopt_proxies(io: ControllerIO, proxies: ProxyState, nodes: list[NodeView], now: float) -> int:
    """Proxies still running (this controller restarted): keep one per node and worker, kill
    extras (and workers past the node's `num_workers`: the step would stop them anyway)."""
    by_id = {n.node_id: n for n in nodes}
    for found in await io.running_proxies():
        node = by_id.get(found.node_id)
        if node is None or slot_key(node.node_id, found.worker) in proxies.proxies \
                or found.worker >= proxies.workers_on(node):
            io.proxies.kill(found.handle)
            continue
        proxies.adopt(node, found.handle, now, found.worker)
    if proxies.proxies:
        log.info("adopted %d running HTTP proxies", len(proxies.proxies))
    return len(proxies.proxies)
