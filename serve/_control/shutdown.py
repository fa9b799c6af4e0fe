"""Serve's orderly shutdown, as the controller runs it, within one time budget.

Proxies drain first (healthz answers 503, so load balancers take them out) and still serve
while the deployments finish their requests and are deleted; then each proxy stops
accepting and finishes its own requests; then the proxies are killed and the checkpoint
dropped (so no later `serve.start` brings the deployments back).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from ..messages import DeploymentId
from .deployment_state import DeploymentState
from .io import ControllerIO
from .proxy_state import ProxyState

__all__ = ["Stoppable", "shut_down"]

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    """What the shutdown needs of the controller."""

    clock: Callable[[], float]
    io: ControllerIO
    proxies: ProxyState
    deployments: dict[DeploymentId, DeploymentState]

    async def delete(self, ids: list[DeploymentId], durable: bool = True) -> None: ...

    async def wait_gone(self, ids: list[DeploymentId], deadline: float) -> bool: ...


async def shut_down(controller: Stoppable, proxies: list[Any], timeout_s: float) -> bool:
    """True if every deployment was deleted in time."""
    clock = controller.clock
    deadline = clock() + timeout_s
    reserve = min(10.0, timeout_s / 4)  # kept back for stopping the proxies and the checkpoint

    def left(keep: float = 0.0) -> float:
        return max(0.0, deadline - clock() - keep)

    io = controller.io.proxies
    await _all_answered([io.call(h, "start_draining") for h in proxies], min(5.0, left(2 * reserve)))
    names = list(controller.deployments)
    await asyncio.wait_for(controller.delete(names, durable=False), max(left(2 * reserve), 1.0))  # records: dropped below
    done = await controller.wait_gone(names, clock() + left(2 * reserve))
    drain_s = left(reserve)
    await _all_answered([io.call(h, "drain", max(drain_s - 1.0, 0.0)) for h in proxies], drain_s)
    kills = controller.proxies.stop_all()
    if kills:
        await _all_answered(kills, max(left(reserve / 2), 0.5))
    await controller.io.drop_records(max(left(), 1.0))
    return done


async def _all_answered(refs: list[Any], timeout_s: float) -> None:
    """Wait for calls to answer (or fail), at most `timeout_s`; best effort."""
    if refs:
        await asyncio.wait([asyncio.ensure_future(_outcome(r)) for r in refs], timeout=timeout_s)


async def _outcome(ref: Any) -> None:
    try:
        await ref
    except Exception as e:
        log.debug("a proxy did not drain cleanly: %r", e)
