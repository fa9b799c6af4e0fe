"""What the controller publishes, kept up to date deployment by deployment: each
deployment's replica set (for routers), the route table (for proxies), the status (for
drivers waiting on a roll-out), and what the checkpoint (each deployment's record) and the KV
summary follow.

The controller hands over only the deployments it stepped (`Publisher.took`); each one's
pieces are compared with what was published for it last, and only what changed is sent
again. So a tick where nothing changed costs nothing here whatever the number of
deployments, and a change costs its own deployment's pieces plus (for the route table and
the status, which are published whole) one shallow copy.

Invariants: `_replica_sets`, `_routes`, `_entries`, `_summary` and `_members` hold exactly
the deployments the controller has (a finished one is dropped the tick it goes, and its
replica set's long poll removed); `members_changed` holds every deployment whose record
changed (or that went) until the controller takes them (`take_members_changed`), and
`summary_dirty` stays set until it has written the summary.
"""

from __future__ import annotations

import json
from typing import Any

from actors.system import LongPollHost

from .._data.client import STATUS_KEY
from .._data.http_proxy import ROUTES_KEY
from .._data.router import replica_set_key
from ..messages import ApplicationStatus, DeploymentId, RouteTable
from .checkpoint import record_members
from .deployment_state import DeploymentState
from .status import app_import_path, deployment_status, replica_set_of

__all__ = ["Publisher", "routable", "summary_entry"]


def routable(s: DeploymentState) -> str | None:
    """The route prefix the deployment serves now (None: not routed)."""
    if s.target.route_prefix is None or s.deleting:
        return None
    scales_to_zero = s.autoscaler is not None and s.autoscaler.config.min_replicas == 0
    return s.target.route_prefix if scales_to_zero or s.running() else None


def summary_entry(dep_id: DeploymentId, s: DeploymentState) -> dict[str, Any]:
    """A deployment in the KV summary (`zeroserve status`, the dashboard)."""
    cfg = s.target.config.autoscaling_config
    return {"name": dep_id.name, "app": dep_id.app, "status": s.status, "replicas": s.counts(),
            "target": s.desired, "route_prefix": s.target.route_prefix, "message": s.message,
            "version": s.target.version, "import_path": s.target.import_path or None,
            "replica_states": {str(r.replica_id): r.state for r in s.replicas.values()},
            "autoscaling": None if cfg is None else cfg.model_dump(mode="json")}


class Publisher:
    def __init__(self, polls: LongPollHost[str, Any]) -> None:
        self.polls = polls
        self._replica_sets: dict[DeploymentId, Any] = {}  # deployment -> its replica set as published
        self._routes: dict[DeploymentId, str] = {}  # deployment -> the prefix it is routed on
        self._routes_dirty = True
        self._entries: dict[str, dict[str, dict[str, Any]]] = {}  # app -> deployment name -> status entry
        self._apps: dict[str, dict[str, Any]] = {}  # app -> its status (as published)
        self._dirty_apps: set[str] = set()
        self._outer: tuple[Any, Any] | None = None  # (http options, proxies) as last published
        self._summary: dict[DeploymentId, dict[str, Any]] = {}
        self._summary_json: dict[DeploymentId, str] = {}  # its entry in the summary, encoded once per change
        self._summary_order: list[DeploymentId] | None = None
        self._members: dict[DeploymentId, tuple] = {}
        self.members_changed: set[DeploymentId] = set()
        self.summary_dirty = True

    def took(self, dep_id: DeploymentId, s: DeploymentState | None, now: float) -> None:
        """Deployment `dep_id` was stepped: `s` is its state, or None once it is gone."""
        if s is None:
            if self._replica_sets.pop(dep_id, None) is not None:
                self.polls.remove(replica_set_key(dep_id))
            self._routes_dirty |= self._routes.pop(dep_id, None) is not None
            app = self._entries.get(dep_id.app)
            if app is not None and app.pop(dep_id.name, None) is not None:
                self._dirty_apps.add(dep_id.app)
            self.summary_dirty |= self._summary.pop(dep_id, None) is not None
            if self._summary_json.pop(dep_id, None) is not None:
                self._summary_order = None
            if self._members.pop(dep_id, None) is not None:
                self.members_changed.add(dep_id)
            return
        self.replica_set(dep_id, s)
        prefix = routable(s)
        if self._routes.get(dep_id) != prefix:
            if prefix is None:
                del self._routes[dep_id]
            else:
                self._routes[dep_id] = prefix
            self._routes_dirty = True
        entry = deployment_status(s, now)
        app = self._entries.setdefault(dep_id.app, {})
        if app.get(dep_id.name) != entry:
            app[dep_id.name] = entry
            self._dirty_apps.add(dep_id.app)
        summary = summary_entry(dep_id, s)
        if self._summary.get(dep_id) != summary:
            self._summary[dep_id] = summary
            if dep_id not in self._summary_json:
                self._summary_order = None
            self._summary_json[dep_id] = f"{json.dumps(str(dep_id))}: {json.dumps(summary)}"
            self.summary_dirty = True
        members = record_members(s)
        if self._members.get(dep_id) != members:
            self._members[dep_id] = members
            self.members_changed.add(dep_id)

    def take_members_changed(self) -> set[DeploymentId]:
        """The deployments whose record changed (or that went) since the last call."""
        changed, self.members_changed = self.members_changed, set()
        return changed

    def replica_set(self, dep_id: DeploymentId, s: DeploymentState) -> None:
        """Publish the deployment's replica set if it changed (also alone: a replica reported
        the multiplexed models it holds)."""
        rs = replica_set_of(s)
        if self._replica_sets.get(dep_id) != rs:
            self._replica_sets[dep_id] = rs
            self.polls.publish(replica_set_key(dep_id), rs)

    def app_deployed(self, app: str) -> None:
        """The application was deployed again (its last_deployed_time_s changes)."""
        self._dirty_apps.add(app)

    def publish(self, deployed_at: dict[str, float], http: dict[str, Any], proxies: Any) -> None:
        """Send the route table and the status if they changed since the last call."""
        if self._routes_dirty:
            self._routes_dirty = False
            self.polls.publish(ROUTES_KEY, RouteTable({p: d for d, p in self._routes.items()}))
        changed = bool(self._dirty_apps) or self._outer != (http, proxies)
        for name in self._dirty_apps:
            deps = self._entries.get(name)
            if not deps:
                self._entries.pop(name, None)
                self._apps.pop(name, None)
                continue
            self._apps[name] = {"deployments": dict(deps),
                                "status": ApplicationStatus.of({d["status"] for d in deps.values()}),
                                "last_deployed_time_s": deployed_at.get(name),
                                "import_path": app_import_path(deps.values())}
        self._dirty_apps.clear()
        if changed:
            self._outer = (http, proxies)
            self.polls.publish(STATUS_KEY, {"applications": dict(self._apps), "http_options": http,
                                            "proxies": proxies})

    def summary_blob(self) -> bytes:
        """The whole KV summary as JSON, {deployment: entry} in deployment order (built only
        when `summary_dirty`: the entries encoded when they changed, joined)."""
        if self._summary_order is None:  # sorted again only when a deployment came or went
            self._summary_order = sorted(self._summary_json, key=lambda d: (d.app, d.name))  # as DeploymentId sorts
        return ("{" + ", ".join(self._summary_json[d] for d in self._summary_order) + "}").encode()
