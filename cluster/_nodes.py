"""Node records of `zeroserve start`: what runs on this machine, for `stop`, `status`
and `actors.init(address="auto")`.

One JSON file per node IP under `<base>/nodes/`. A record is *live* if its processes
still run with the session directory on their command line (a reused pid is not ours).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from actors.system import base_dir

__all__ = ["NodeRecord", "load_records", "live_record", "remove_record"]


@dataclass
class NodeRecord:
    node_ip: str
    head_address: str
    is_head: bool
    session: str
    token_file: str
    pids: dict[str, int] = field(default_factory=dict)
    node_id: str = ""
    started_at: float = field(default_factory=time.time)
    agent_address: str = ""  # the agent's runtime address (`zeroserve health` pings it)

    @property
    def path(self) -> Path:
        return base_dir() / "nodes" / f"{self.node_ip}.json"

    def save(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.path)

    def processes(self) -> list[psutil.Process]:
        """This node's processes that are still running."""
        alive = []
        for pid in self.pids.values():
            try:
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE and any(self.session in a for a in p.cmdline()):
                    alive.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return alive


def load_records() -> list[NodeRecord]:
    d = base_dir() / "nodes"
    out = []
    for f in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            out.append(NodeRecord(**json.loads(f.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return out


def live_record(node_ip: str) -> NodeRecord | None:
    for rec in load_records():
        if rec.node_ip == node_ip and rec.processes():
            return rec
    return None


def remove_record(rec: NodeRecord) -> None:
    try:
        rec.path.unlink()
    except FileNotFoundError:
        pass
