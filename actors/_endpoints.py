"""The runtime's own endpoints (target `rt`) and the per-process extensions every
runtime carries: the actor directory and the table of exported refs.

`rt/fetch` serves exported ref values to borrowers, `rt/log` receives worker output
lines to echo (drivers), `rt/ping` answers liveness probes.
"""

from __future__ import annotations

import sys
from typing import Any

from ._directory import ActorDirectory
from ._host import ServiceTarget
from ._refs import Exports

__all__ = ["install", "RuntimeEndpoints"]


class RuntimeEndpoints:
    def __init__(self, rt: Any, echo_logs: bool) -> None:
        self._rt = rt
        self._echo = echo_logs

    async def fetch(self, export_id: int) -> Any:
        return await self._rt.extensions["exports"].fetch(export_id)

    def log(self, prefix: str, stream: str, lines: list[str]) -> None:
        if not self._echo:
            return
        out = sys.stderr if stream == "err" else sys.stdout
        out.write("".join(f"{prefix} {line}\n" for line in lines))
        out.flush()

    def ping(self) -> str:
        return self._rt.role


def install(rt: Any, *, echo_logs: bool = False) -> None:
    rt.extensions["directory"] = ActorDirectory(rt)
    rt.extensions["exports"] = Exports(rt)
    rt.register("rt", ServiceTarget(RuntimeEndpoints(rt, echo_logs)))
