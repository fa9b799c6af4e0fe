"""`zeroserve status`: read the cluster's state from the head and render it (each node
with its metrics endpoint, as its registration carries it, and the dashboard's URL)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from actors.messages import ActorInfo, ActorState, NodeInfo
from actors.system import Runtime, run_client

__all__ = ["SERVE_SUMMARY_KEY", "fetch_status", "render_status", "status_of"]

SERVE_SUMMARY_KEY = "serve/status.json"  # written by Serve's controller: {"app#name": {"name", "app", ...}}


def status_of(head_address: str, nodes: Sequence[NodeInfo], actor_infos: Sequence[ActorInfo],
              serve_blob: bytes | None, dashboard_url: str = "") -> dict[str, Any]:
    """The status as JSON (`zeroserve status --json`, and the dashboard's `/api/status`)."""
    return {
        "head": head_address.removeprefix("tcp://"),
        "dashboard_url": dashboard_url or None,
        "nodes": [{"node_id": n.node_id.hex, "ip": n.ip, "alive": n.alive, "is_head": n.is_head,
                   "resources_total": n.resources_total, "resources_available": n.resources_available,
                   "metrics_url": n.metrics_url or None, "gpu_free": dict(n.gpu_free)}
                  for n in nodes],
        "actors": [{"actor_id": a.actor_id.hex, "class_name": a.class_name, "state": a.state.value,
                    "name": a.name, "namespace": a.namespace, "node_id": a.node_id.hex if a.node_id else None,
                    "pid": a.pid, "restarts_left": a.restarts_left, "death_cause": a.death_cause,
                    "gpu_ids": list(a.gpu_ids)}
                   for a in actor_infos],
        "serve": json.loads(serve_blob) if serve_blob else {},
    }


def fetch_status(head_address: str, token: str) -> dict[str, Any]:
    async def read(rt: Runtime) -> dict[str, Any]:
        info, nodes, actor_infos, serve_blob = await asyncio.gather(
            rt.head.info(timeout=10), rt.head.nodes(timeout=10), rt.head.list_actors(timeout=10),
            rt.head.kv_get(SERVE_SUMMARY_KEY, timeout=10))
        return status_of(head_address, nodes, actor_infos, serve_blob, info.get("dashboard_url") or "")

    return run_client(head_address, token, read)


def _used(total: dict[str, float], avail: dict[str, float], key: str) -> str:
    t = total.get(key, 0.0)
    return f"{t - avail.get(key, 0.0):g}/{t:g}"


def _gpus(n: dict[str, Any]) -> str:
    """`1.5/2 (0: 1, 1: 0.5)`: GPUs used/total, and what is used of each device."""
    if not n["resources_total"].get("GPU"):
        return "-"
    per_device = n.get("gpu_free") or {}
    detail = ", ".join(f"{d}: {1.0 - free:g}" for d, free in per_device.items())
    return _used(n["resources_total"], n["resources_available"], "GPU") + (f" ({detail})" if detail else "")


def render_status(data: dict[str, Any]) -> str:
    lines = [f"Cluster at {data['head']}"]
    if data.get("dashboard_url"):
        lines.append(f"Dashboard: {data['dashboard_url']}")
    lines += ["", "Nodes:"]
    rows: list[tuple[str, ...]] = [("NODE", "IP", "STATE", "CPU used/total", "GPU used/total", "custom resources",
                                    "actors", "METRICS")]
    per_node = Counter(a["node_id"] for a in data["actors"] if a["state"] != ActorState.DEAD.value)
    for n in data["nodes"]:
        custom = ", ".join(f"{k} {_used(n['resources_total'], n['resources_available'], k)}"
                           for k in sorted(n["resources_total"]) if k not in ("CPU", "GPU", "memory")) or "-"
        rows.append((n["node_id"] + (" (head)" if n["is_head"] else ""), n["ip"], "alive" if n["alive"] else "DEAD",
                     _used(n["resources_total"], n["resources_available"], "CPU"), _gpus(n), custom,
                     str(per_node[n["node_id"]]), n.get("metrics_url") or "-"))
    lines += _table(rows)
    states = Counter(a["state"] for a in data["actors"])
    lines += ["", "Actors: " + (", ".join(f"{v} {k.lower()}" for k, v in sorted(states.items())) or "none")]
    live = [a for a in data["actors"] if a["state"] != ActorState.DEAD.value]
    if live:
        rows = [("ACTOR", "CLASS", "STATE", "NAME", "NODE", "PID", "GPUS")]
        rows += [(a["actor_id"], a["class_name"], a["state"], a["name"] or "-", a["node_id"] or "-", str(a["pid"] or "-"),
                  ",".join(a.get("gpu_ids") or ()) or "-") for a in live]
        lines += _table(rows)
    deployments = data.get("serve", {})
    if deployments:
        lines += ["", "Serve deployments:"]
        rows = [("DEPLOYMENT", "APP", "STATUS", "RUNNING/TARGET", "ROUTE", "MESSAGE")]
        rows += [(d.get("name", name), d["app"], d["status"], f"{d['replicas'].get('RUNNING', 0)}/{d['target']}",
                  d["route_prefix"] or "-", (d["message"] or "")[:60]) for name, d in deployments.items()]
        lines += _table(rows)
    return "\n".join(lines)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
