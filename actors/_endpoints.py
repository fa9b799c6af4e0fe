"""The runtime's own endpoints (target `rt`), served by every process of the cluster.

`rt/fetch` serves exported ref values to borrowers, `rt/log` receives worker output
lines to echo (drivers), `rt/ping` answers liveness probes, `rt/metrics` answers the
metric families of this process's registry (its node's agent pulls them at each scrape).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ._host import ServiceTarget, rpc
from ._metrics import metrics_registry
from ._metrics_export import families_of
from ._runtime import Runtime

__all__ = ["install", "RuntimeEndpoints"]


class RuntimeEndpoints:
    def __init__(self, rt: Runtime, echo_logs: bool) -> None:
        self._rt = rt
        self._echo = echo_logs

    @rpc
    async def fetch(self, export_id: int) -> Any:
        return await self._rt.exports.fetch(export_id)

    @rpc
    def log(self, prefix: str, stream: str, lines: list[str]) -> None:
        if not self._echo:
            return
        out = sys.stderr if stream == "err" else sys.stdout
        out.write("".join(f"{prefix} {line}\n" for line in lines))
        out.flush()

    @rpc
    def ping(self) -> str:
        return self._rt.role

    @rpc
    def metrics(self) -> dict[str, Any]:
        """{"pid", "role", "families"}: what this process's registry reports now."""
        return {"pid": os.getpid(), "role": self._rt.role, "families": families_of(metrics_registry())}


def install(rt: Runtime, *, echo_logs: bool = False) -> None:
    """Serve the runtime's endpoints (`rt/...`) on this runtime."""
    rt.register("rt", ServiceTarget(RuntimeEndpoints(rt, echo_logs)))
