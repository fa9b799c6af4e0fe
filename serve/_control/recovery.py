"""A restarted controller takes over what its predecessor ran, so traffic never stops.

From the checkpoint: every deployment's target, and each replica still alive (a named
actor) adopted in the state it had — a RUNNING one stays routed and is health-checked at
once, a STARTING one is asked `ready` again, a STOPPING one is drained again. Replicas
that died meanwhile are simply missing, and the reconcile loop replaces them. Proxies
still running are adopted, one per node; extras (and proxies of nodes that are gone) are
killed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from .._config import HTTPOptions
from ..messages import DeploymentId, ServeSettings
from .checkpoint import Checkpoint
from .deployment_state import DeploymentState
from .io import ControllerIO
from .proxy_state import NodeView, ProxyState, slot_key

__all__ = ["Recovered", "adopt_proxies", "recover_deployments"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recovered:
    deployments: dict[DeploymentId, DeploymentState]
    http_options: HTTPOptions | None  # None: no checkpoint (a fresh start keeps the options it was given)
    adopted: int
    settings: ServeSettings | None = None


async def recover_deployments(io: ControllerIO, now: float, version_base: int) -> Recovered:
    blob = await io.load_checkpoint()
    if blob is None:
        return Recovered({}, None, 0)
    checkpoint = Checkpoint.loads(blob)
    deployments: dict[DeploymentId, DeploymentState] = {}
    adopted = 0
    for target in checkpoint.targets:
        state = DeploymentState(target, io.replicas, version_base=version_base)
        if target.id in checkpoint.deleting:
            state.delete()
        for record in checkpoint.replicas.get(target.id, ()):
            handle = await io.find_replica(record.replica_id)
            if handle is None:
                continue
            state.adopt(record.replica_id, handle, record.version, record.user_config, now, record.state)
            adopted += 1
        deployments[target.id] = state
    log.info("recovered %d deployments and adopted %d running replicas", len(deployments), adopted)
    return Recovered(deployments, checkpoint.http_options, adopted, checkpoint.settings)


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
