"""Node records of `zeroserve start`: what runs on this machine, for `stop`, `status`
and `actors.init(address="auto")`.

One JSON file per node IP under `<base>/nodes/` (the base directory checked by
`actors.system.secure_base`: ours, writable by no one else). A record's PIDs are never
trusted as such: a process counts as the record's only if it runs as this user, started
at the time recorded (a reused PID did not), and its command line is `-m cluster ...`
with the record's session directory. `zeroserve stop` signals only those.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil

from actors.system import base_dir, node_files, secure_base, secure_dir

__all__ = ["NodeRecord", "load_records", "live_record", "remove_record", "start_times"]

_START_SLACK_S = 1.0  # create times are rounded (jiffies); a reused pid starts much later


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
    pid_started: dict[str, float] = field(default_factory=dict)  # process create times, by role
    agent_address: str = ""  # the agent's runtime address (`zeroserve health` pings it)

    @property
    def path(self) -> Path:
        return base_dir() / "nodes" / f"{self.node_ip}.json"

    @classmethod
    def from_json(cls, data: dict) -> NodeRecord:
        """A record read back; fields this version does not know are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self) -> None:
        secure_base()
        secure_dir(self.path.parent, "the node records directory")
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.path)

    def _ours(self, role: str, p: psutil.Process) -> bool:
        if p.uids().real != os.getuid() or p.status() == psutil.STATUS_ZOMBIE:
            return False
        started = self.pid_started.get(role)
        if started is None or abs(p.create_time() - started) > _START_SLACK_S:
            return False
        cmd = p.cmdline()
        return ("cluster" in cmd and "-m" in cmd and "--session-dir" in cmd
                and cmd[cmd.index("--session-dir") + 1:][:1] == [self.session])

    def processes(self) -> list[psutil.Process]:
        """This node's processes that still run (verified: ours, the same process, the
        same command)."""
        alive = []
        for role, pid in self.pids.items():
            if not isinstance(pid, int):
                continue
            try:
                p = psutil.Process(pid)
                if self._ours(role, p):
                    alive.append(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ValueError):
                continue
        return alive


def start_times(pids: dict[str, int]) -> dict[str, float]:
    """The create time of each process, to recognise it later."""
    out = {}
    for role, pid in pids.items():
        try:
            out[role] = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            continue
    return out


def load_records() -> list[NodeRecord]:
    out = []
    for f in node_files():
        try:
            out.append(NodeRecord.from_json(json.loads(f.read_text())))
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
