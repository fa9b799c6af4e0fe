"""`zeroserve logs [TARGET] [-f] [--tail N] [--node IP]`: the log files of every node.

Without TARGET it lists every node's log files. A TARGET selects files on every node
(or the one `--node` names), by what writes them:
- `head`, `agent`, `controller`, `proxy`: those processes' files;
- an application or a deployment (from Serve's summary in the head's KV): its replicas'
  `replica_<app>_<deployment>_<tag>` files; a replica id `Deployment#tag`: that one's;
- a named actor or an actor id (the head's actor table, the agents' record of who
  writes which file); else a log file's name (with or without `.out`/`.err`/`.log`).
It prints the last `--tail` lines of each (a header per file), then with `-f` follows
them all, printing new lines as they come (prefixed with node and file when there are
several), until Ctrl-C. Everything is read through the agents (`list_logs`, `tail_log`,
`follow_log`), so files on other machines are read the same way as local ones.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from actors.system import Runtime, run_client, safe_log_name

from .exceptions import NodeStartError

__all__ = ["LogFile", "logs", "select_files"]

_SERVE_SUMMARY_KEY = "serve/status.json"  # written by serve's controller: {deployment: {"app", ...}}
_CURRENT = (".out", ".err", ".log")  # rotated backups end in .1, .2, ...: not selected by a target
_AGENT_TIMEOUT_S = 10.0
_FOLLOW_HOLD_S = 10.0


@dataclass(frozen=True, slots=True)
class LogFile:
    node_ip: str
    agent: str
    name: str
    size: int
    mtime: float
    actor_id: str | None = None
    class_name: str | None = None
    actor_name: str | None = None

    @property
    def stem(self) -> str:
        for suffix in _CURRENT:
            if self.name.endswith(suffix):
                return self.name[: -len(suffix)]
        return self.name


def select_files(target: str, files: list[LogFile], serve_summary: dict[str, Any],
                 actor_ids: set[str]) -> list[LogFile]:
    """The current (not rotated) files `target` names; see the module's docstring."""
    current = [f for f in files if f.name.endswith(_CURRENT)]
    tests: list[Callable[[LogFile], bool]] = []
    fixed = {"head": lambda f: f.stem == "head", "agent": lambda f: f.stem.startswith("agent-"),
             "controller": lambda f: f.stem == "controller", "proxy": lambda f: f.stem.startswith("proxy_")}
    if target in fixed:
        tests.append(fixed[target])
    prefixes = [safe_log_name("replica", d["app"], d.get("name", key)) + "_" for key, d in serve_summary.items()
                if target in (key, d.get("name"), d.get("app"))]
    if prefixes:
        tests.append(lambda f: f.stem.startswith(tuple(prefixes)))
    deployment, sep, tag = target.rpartition("#")  # a replica id: app#Deployment#tag (or Deployment#tag)
    if sep and deployment and tag:
        suffix = "_" + safe_log_name(deployment.rpartition("#")[2], tag)
        tests.append(lambda f: f.stem.startswith("replica_") and f.stem.endswith(suffix))
    ids = set(actor_ids) | {target}
    tests.append(lambda f: f.actor_id in ids or any(f.stem == f"{f.class_name or ''}-{i}" or
                                                    f.stem.endswith(f"-{i}") for i in ids))
    tests.append(lambda f: target in (f.name, f.stem))
    return [f for f in current if any(t(f) for t in tests)]


async def _list(rt: Runtime, node_ip: str | None, stdout_only: dict[str, list[str]] | None = None) -> list[LogFile]:
    """The log files of the alive nodes (or `node_ip`'s); `stdout_only` gets, by node IP,
    the processes ("head", "agent") that log to their stdout only."""
    nodes = [n for n in await rt.head.nodes() if n.alive and (node_ip is None or n.ip == node_ip)]
    if not nodes:
        raise NodeStartError(f"no alive node {node_ip} in the cluster" if node_ip else "no alive node in the cluster")
    replies = await asyncio.gather(*(rt.call_service(n.agent_address, "agent", "list_logs", timeout=_AGENT_TIMEOUT_S)
                                     for n in nodes), return_exceptions=True)
    out = []
    for n, reply in zip(nodes, replies, strict=True):
        if isinstance(reply, BaseException):
            print(f"zeroserve: the agent of {n.ip} did not list its logs: {reply}", file=sys.stderr)
            continue
        if stdout_only is not None and reply.get("stdout_only"):
            stdout_only[n.ip] = list(reply["stdout_only"])
        for f in reply["files"]:
            out.append(LogFile(n.ip, n.agent_address, f["name"], f["size"], f["mtime"], f.get("actor_id"),
                               f.get("class_name"), f.get("actor_name")))
    return out


async def _actor_ids(rt: Runtime, target: str) -> set[str]:
    return {a.actor_id.hex for a in await rt.head.list_actors() if a.name == target}


def _render_list(files: list[LogFile]) -> str:
    rows = [("NODE", "FILE", "SIZE", "MODIFIED", "ACTOR")]
    for f in sorted(files, key=lambda f: (f.node_ip, f.name)):
        rows.append((f.node_ip, f.name, _size(f.size), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.mtime)),
                     f.actor_name or (f"{f.class_name} {f.actor_id}" if f.actor_id else "-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


class _Printer:
    """Writes a file's bytes to stdout line by line (a partial line waits for its end)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> None:
        text = self._partial + self._decoder.decode(data)
        *lines, self._partial = text.split("\n")
        if lines:
            sys.stdout.write("".join(f"{self.prefix}{ln}\n" for ln in lines))
            sys.stdout.flush()


async def _show(rt: Runtime, selected: list[LogFile], tail: int, follow: bool) -> None:
    tails = await asyncio.gather(*(rt.call_service(f.agent, "agent", "tail_log", f.name, tail,
                                                   timeout=_AGENT_TIMEOUT_S) for f in selected))
    for f, t in zip(selected, tails, strict=True):
        if t["data"]:
            sys.stdout.write(f"==> {f.node_ip} {f.name} <==\n")
            _Printer("").feed(t["data"])
    sys.stdout.flush()
    if not follow:
        return
    many = len(selected) > 1

    async def follow_one(f: LogFile, offset: int, inode: int) -> None:
        printer = _Printer(f"[{f.node_ip} {f.name}] " if many else "")
        while True:
            chunk = await rt.call_service(f.agent, "agent", "follow_log", f.name, offset, inode, _FOLLOW_HOLD_S,
                                          timeout=_FOLLOW_HOLD_S + _AGENT_TIMEOUT_S)
            printer.feed(chunk["data"])
            offset, inode = chunk["offset"], chunk["inode"]

    await asyncio.gather(*(follow_one(f, t["offset"], t["inode"]) for f, t in zip(selected, tails, strict=True)))


def logs(head_address: str, token: str, target: str | None, *, follow: bool, tail: int, node_ip: str | None,
         as_json: bool = False) -> int:
    async def run(rt: Runtime) -> int:
        stdout_only: dict[str, list[str]] = {}
        files = await _list(rt, node_ip, stdout_only)
        if target is None:
            print(json.dumps([_as_dict(f) for f in files], indent=2) if as_json else _render_list(files))
            return 0
        blob = await rt.head.kv_get(_SERVE_SUMMARY_KEY)
        summary = json.loads(blob) if blob else {}
        selected = select_files(target, files, summary, await _actor_ids(rt, target))
        unfiled = sorted(ip for ip, names in stdout_only.items() if target in names)
        if unfiled:
            note = _in_the_foreground(target, unfiled)
            if not selected:
                raise NodeStartError(note)
            print(f"zeroserve: note: {note}", file=sys.stderr)  # the other nodes' files follow
        if not selected:
            raise NodeStartError(f"no log files match {target!r} (an application, a deployment, a replica id "
                                 "Deployment#tag, a named actor, or head/agent/proxy/controller); "
                                 "`zeroserve logs` lists them all")
        await _show(rt, sorted(selected, key=lambda f: (f.node_ip, f.name)), tail, follow)
        return 0

    try:
        return run_client(head_address, token, run)
    except KeyboardInterrupt:
        return 0


def _in_the_foreground(target: str, ips: list[str]) -> str:
    """Why `target` ("head" or "agent") has no log file on the nodes `ips`."""
    return (f"the {target} {'of' if target == 'agent' else 'on'} {', '.join(ips)} runs in the foreground "
            f"(`zeroserve start --block`) and logs to its stdout; start it with --log-files to keep files "
            "(`zeroserve logs` reads files)")


def _as_dict(f: LogFile) -> dict[str, Any]:
    return {"node_ip": f.node_ip, "name": f.name, "size": f.size, "mtime": f.mtime, "actor_id": f.actor_id,
            "class_name": f.class_name, "actor_name": f.actor_name}
