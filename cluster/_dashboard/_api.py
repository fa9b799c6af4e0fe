"""The dashboard's JSON API (`/api/...`) and its static page, over one seam (`Source`).

Everything comes from the head's own state (nodes, actors, KV — Serve's status summary,
keyed "app#name"), the nodes' metrics endpoints (through the `Scraper`'s `Sampler`) and
the agents' log reads (`list_logs`, `tail_log`, `follow_log`). Serve is never imported:
its replicas and proxies are found in the actor table by the names Serve gives them.

Invariants: a request never waits on a scrape (it reads the last one); a log read is
bounded by the agent (256 KiB); bad parameters are a 400 that says what to send.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from importlib import resources
from typing import Any, Protocol

from actors.messages import ActorInfo, ActorState, NodeInfo
from actors.system import safe_log_name

from .._log_access import LogNameError
from .._logs import LogFile, select_files
from .._status import SERVE_SUMMARY_KEY, status_of
from ._http import Request, Response, json_response
from ._sampler import Sampler

__all__ = ["Api", "Source"]

REPLICA_PREFIX = "SERVE_REPLICA::"  # Serve's actor names (serve/_names.py), read here without importing serve
PROXY_PREFIX = "SERVE_PROXY::"
SERVE_NAMESPACE = "serve"
_AGENT_TIMEOUT_S = 5.0
_DEAD_SHOWN = 5  # dead replicas of a deployment still listed (newest first)
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"), "/app.js": ("app.js", "text/javascript; charset=utf-8"),
           "/app.css": ("app.css", "text/css; charset=utf-8")}


_NO_FIGURES = {"rps": None, "errors_per_s": None, "p50_ms": None, "p99_ms": None, "in_flight": None}


class Source(Protocol):
    """What the API reads: the head's state, and calls to the agents."""

    head_address: str
    dashboard_url: str

    def nodes(self) -> list[NodeInfo]: ...

    def actors(self) -> list[ActorInfo]: ...

    def kv_get(self, key: str) -> bytes | None: ...

    async def call_agent(self, address: str, method: str, *args: Any, timeout: float) -> Any: ...


class BadRequest(ValueError):
    """A parameter of an API call is missing or wrong (answered 400)."""


def _param(req: Request, name: str, default: str | None = None) -> str:
    value = req.query.get(name, default)
    if value is None or value == "":
        raise BadRequest(f"missing query parameter {name!r}")
    return value


def _int(req: Request, name: str, default: int | None = None) -> int:
    text = req.query.get(name)
    if text is None or text == "":
        if default is None:
            raise BadRequest(f"missing query parameter {name!r}")
        return default
    try:
        return int(text)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer, got {text!r}") from None


class Api:
    def __init__(self, source: Source, sampler: Sampler, clock: Any = time.time) -> None:
        self.source = source
        self.sampler = sampler
        self.clock = clock
        self._static: dict[str, bytes] = {}
        self.routes = {"/api/status": self.status, "/api/cluster": self.cluster, "/api/serve": self.serve,
                       "/api/deployment": self.deployment, "/api/logs": self.logs, "/api/logs/tail": self.tail,
                       "/api/logs/read": self.read}

    async def handle(self, req: Request) -> Response:
        if req.path in _STATIC:
            return self._page(req.path)
        route = self.routes.get(req.path)
        if route is None:
            return json_response({"error": f"no such endpoint {req.path}; see /api/ in the README"}, 404)
        try:
            return json_response(await route(req))
        except BadRequest as e:
            return json_response({"error": str(e)}, 400)
        except LookupError as e:
            return json_response({"error": str(e.args[0]) if e.args else "not found"}, 404)

    def _page(self, path: str) -> Response:
        name, ctype = _STATIC[path]
        body = self._static.get(name)
        if body is None:
            body = self._static[name] = (resources.files(__package__) / "static" / name).read_bytes()
        return Response(200, body, ctype, (("Cache-Control", "no-cache"),))

    # -- state -------------------------------------------------------------------------
    def _summary(self) -> dict[str, Any]:
        blob = self.source.kv_get(SERVE_SUMMARY_KEY)
        return json.loads(blob) if blob else {}

    async def status(self, req: Request) -> dict[str, Any]:
        """Exactly what `zeroserve status --json` prints."""
        return status_of(self.source.head_address, self.source.nodes(), self.source.actors(),
                         self.source.kv_get(SERVE_SUMMARY_KEY), self.source.dashboard_url)

    async def cluster(self, req: Request) -> dict[str, Any]:
        nodes, actors = self.source.nodes(), self.source.actors()
        per_node = Counter(a.node_id.hex for a in actors if a.node_id is not None and a.state is not ActorState.DEAD)
        ip_of = {n.node_id.hex: n.ip for n in nodes}
        return {
            "head": self.source.head_address.removeprefix("tcp://"), "dashboard_url": self.source.dashboard_url,
            "time": self.clock(),
            "nodes": [{"node_id": n.node_id.hex, "ip": n.ip, "hostname": n.hostname, "alive": n.alive,
                       "is_head": n.is_head, "metrics_url": n.metrics_url or None, "actors": per_node[n.node_id.hex],
                       "resources": {k: {"used": total - n.resources_available.get(k, 0.0), "total": total}
                                     for k, total in sorted(n.resources_total.items())}} for n in nodes],
            "actors_by_state": dict(Counter(a.state.value for a in actors)),
            "actors": [_actor(a, ip_of) for a in actors],
        }

    async def serve(self, req: Request) -> dict[str, Any]:
        summary = self._summary()
        apps: dict[str, dict[str, Any]] = {}
        paths: dict[str, list[str | None]] = {}  # app -> its deployments' import paths (its ingress has one)
        for key, d in summary.items():
            app = apps.setdefault(d.get("app", ""), {"name": d.get("app", ""), "deployments": []})
            paths.setdefault(app["name"], []).append(d.get("import_path"))
            app["deployments"].append(self._deployment_row(key, d))
        for app in apps.values():
            statuses = {d["status"] for d in app["deployments"]}
            app["status"] = ("UNHEALTHY" if "UNHEALTHY" in statuses else "DELETING" if statuses == {"DELETING"}
                             else "RUNNING" if statuses == {"HEALTHY"} else "DEPLOYING")
            app["route_prefix"] = next((d["route_prefix"] for d in app["deployments"] if d["route_prefix"]), None)
            app["import_path"] = next((p for p in paths.get(app["name"], ()) if p), None)
        nodes = {n.node_id.hex: n for n in self.source.nodes()}
        proxies = []
        for a in self.source.actors():
            if a.namespace == SERVE_NAMESPACE and (a.name or "").startswith(PROXY_PREFIX) and \
                    a.state is not ActorState.DEAD:
                node = nodes.get(a.node_id.hex) if a.node_id is not None else None
                proxies.append({"node_id": a.node_id.hex if a.node_id else None, "node_ip": node.ip if node else None,
                                "state": a.state.value, "pid": a.pid, "actor_id": a.actor_id.hex})
        return {"time": self.clock(), "applications": sorted(apps.values(), key=lambda a: a["name"]),
                "proxies": sorted(proxies, key=lambda p: p["node_ip"] or "")}

    def _deployment_row(self, key: str, d: dict[str, Any]) -> dict[str, Any]:
        app, name = d.get("app", ""), d.get("name", key)
        return {"app": app, "name": name, "status": d.get("status"), "message": d.get("message") or "",
                "version": d.get("version"), "replicas": d.get("replicas", {}), "target": d.get("target"),
                "route_prefix": d.get("route_prefix"), "autoscaling": d.get("autoscaling"),
                **self.sampler.deployment(app, name)["now"]}

    async def deployment(self, req: Request) -> dict[str, Any]:
        app, name = _param(req, "app"), _param(req, "name")
        summary = self._summary()
        entry = next((d for k, d in summary.items() if d.get("app", "") == app and d.get("name", k) == name), None)
        if entry is None:
            raise LookupError(f"no deployment {name!r} in application {app!r}")
        now = self.clock()
        nodes = {n.node_id.hex: n for n in self.source.nodes()}
        prefix = f"{REPLICA_PREFIX}{app}#{name}#"
        seen: dict[str, ActorInfo] = {}
        for a in self.source.actors():
            if a.namespace == SERVE_NAMESPACE and (a.name or "").startswith(prefix):
                rid = a.name[len(REPLICA_PREFIX):] if a.name else ""
                if rid not in seen or a.state is not ActorState.DEAD:
                    seen[rid] = a
        states: dict[str, str] = entry.get("replica_states") or {}
        replicas = []
        for rid in sorted(set(states) | {r for r, a in seen.items() if a.state is not ActorState.DEAD}):
            replicas.append(self._replica(app, name, rid, states.get(rid), seen.get(rid), nodes, now))
        dead = [a for r, a in seen.items() if r not in states and a.state is ActorState.DEAD]
        for a in dead[-_DEAD_SHOWN:]:
            rid = (a.name or "")[len(REPLICA_PREFIX):]
            replicas.append(self._replica(app, name, rid, ActorState.DEAD.value, a, nodes, now))
        return {**self._deployment_row("", entry), "time": now, "replica_list": replicas,
                "history": self.sampler.deployment(app, name)["history"]}

    def _replica(self, app: str, name: str, rid: str, state: str | None, actor: ActorInfo | None,
                 nodes: dict[str, NodeInfo], now: float) -> dict[str, Any]:
        node = nodes.get(actor.node_id.hex) if actor is not None and actor.node_id is not None else None
        pid = actor.pid if actor is not None else None
        started = self.sampler.started_at(node.ip, pid) if node is not None else None
        tag = rid.rsplit("#", 1)[-1]
        return {"replica_id": rid, "state": state or (actor.state.value if actor else "UNKNOWN"),
                "actor_state": actor.state.value if actor else None, "node_id": node.node_id.hex if node else None,
                "node_ip": node.ip if node else None, "pid": pid, "uptime_s": round(now - started, 1) if started else None,
                "death_cause": actor.death_cause if actor is not None else None,
                "log_stem": safe_log_name("replica", app, name, tag),
                **(self.sampler.replica(app, name, rid) if state != ActorState.DEAD.value else _NO_FIGURES)}

    # -- logs --------------------------------------------------------------------------
    async def _files(self, node_ip: str | None) -> list[LogFile]:
        nodes = [n for n in self.source.nodes() if n.alive and (node_ip is None or n.ip == node_ip)]
        out = []
        for n in nodes:
            try:
                reply = await self.source.call_agent(n.agent_address, "list_logs", timeout=_AGENT_TIMEOUT_S)
            except Exception:
                continue  # a node that does not answer lists nothing
            out += [LogFile(n.ip, n.agent_address, f["name"], f["size"], f["mtime"], f.get("actor_id"),
                            f.get("class_name"), f.get("actor_name")) for f in reply["files"]]
        return out

    async def logs(self, req: Request) -> dict[str, Any]:
        """The log files of every alive node (or `node`), or those `target` names (as
        `zeroserve logs TARGET` does: an application, a deployment, a replica id, ...)."""
        files = await self._files(req.query.get("node") or None)
        target = req.query.get("target")
        if target:
            ids = {a.actor_id.hex for a in self.source.actors() if a.name == target}
            files = select_files(target, files, self._summary(), ids)
        return {"files": [{"node_ip": f.node_ip, "name": f.name, "size": f.size, "mtime": f.mtime,
                           "actor_id": f.actor_id, "actor_name": f.actor_name, "class_name": f.class_name}
                          for f in sorted(files, key=lambda f: (f.node_ip, f.name))]}

    def _agent_of(self, node_ip: str) -> str:
        for n in self.source.nodes():
            if n.ip == node_ip and n.alive:
                return n.agent_address
        raise LookupError(f"no alive node {node_ip}")

    async def tail(self, req: Request) -> dict[str, Any]:
        """The last `lines` (default 200) lines of `file` on `node`; `filter`: only the lines
        holding that text (a request id, say)."""
        node, name = _param(req, "node"), _param(req, "file")
        lines = _int(req, "lines", 200)
        text_filter = req.query.get("filter") or ""
        reply = await self._agent_call(node, "tail_log", name, lines)
        text = reply["data"].decode("utf-8", "replace")
        if text_filter:
            text = "".join(ln for ln in text.splitlines(keepends=True) if text_filter in ln)
        return {"node": node, "file": name, "text": text, "offset": reply["offset"], "inode": reply["inode"]}

    async def read(self, req: Request) -> dict[str, Any]:
        """The bytes of `file` on `node` written since `offset` (of file `inode`), as text."""
        node, name = _param(req, "node"), _param(req, "file")
        offset = _int(req, "offset")
        inode = _int(req, "inode", -1)
        reply = await self._agent_call(node, "follow_log", name, offset,
                                       inode if inode >= 0 else None, 0.0)
        return {"node": node, "file": name, "text": reply["data"].decode("utf-8", "replace"),
                "offset": reply["offset"], "inode": reply["inode"]}

    async def _agent_call(self, node: str, method: str, *args: Any) -> Any:
        try:
            return await self.source.call_agent(self._agent_of(node), method, *args, timeout=_AGENT_TIMEOUT_S)
        except LogNameError as e:  # not a log file of that node
            raise BadRequest(str(e)) from None


def _actor(a: ActorInfo, ip_of: dict[str, str]) -> dict[str, Any]:
    node = a.node_id.hex if a.node_id is not None else None
    return {"actor_id": a.actor_id.hex, "class_name": a.class_name, "state": a.state.value, "name": a.name,
            "namespace": a.namespace, "node_id": node, "node_ip": ip_of.get(node or ""), "pid": a.pid,
            "restarts_left": a.restarts_left, "death_cause": a.death_cause}
