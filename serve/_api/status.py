"""What `serve.status()` returns: Ray Serve 2.x's `ServeStatus` shape over the controller's
status summary.

    st = serve.status()
    st.applications["default"].status                      # ApplicationStatus.RUNNING
    st.applications["default"].deployments["Model"].replica_states   # {"RUNNING": 2}
    st.proxies                                             # {node_id: ProxyStatus.HEALTHY}
    print(st)                                              # Ray's YAML shape

Each object is also a read-only mapping over the summary it wraps, so code that indexes
the status like a dict (`serve.status()["applications"]["default"]["deployments"]`) keeps
working and sees the full summary (replica details, progress, HTTP options); attributes
give Ray's names and types. `status_trigger` is derived from the status (zeroserve does
not record what triggered it).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import yaml

from ..messages import ApplicationStatus, DeploymentStatus, ProxyStatus

__all__ = ["ApplicationStatusOverview", "DeploymentStatusOverview", "ServeStatus"]

_TRIGGERS = {
    DeploymentStatus.UPDATING: "CONFIG_UPDATE_STARTED",
    DeploymentStatus.HEALTHY: "CONFIG_UPDATE_COMPLETED",
    DeploymentStatus.UNHEALTHY: "REPLICA_STARTUP_FAILED",
    DeploymentStatus.DELETING: "DELETING",
}


class _View(Mapping[str, Any]):
    """A read-only mapping over one part of the status summary."""

    __slots__ = ("_raw",)

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw

    def __getitem__(self, key: str) -> Any:
        return self._raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def __str__(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False).rstrip("\n")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()!r})"


class DeploymentStatusOverview(_View):
    """One deployment: `status`, `status_trigger`, `replica_states` ({state: count}), `message`."""

    __slots__ = ()

    @property
    def status(self) -> DeploymentStatus:
        return DeploymentStatus(self._raw["status"])

    @property
    def status_trigger(self) -> str:
        return _TRIGGERS.get(self.status, "UNSPECIFIED")

    @property
    def replica_states(self) -> dict[str, int]:
        return {str(k): v for k, v in sorted(self._raw.get("replicas", {}).items())}

    @property
    def message(self) -> str:
        return self._raw.get("message") or ""

    def to_dict(self) -> dict[str, Any]:
        return {"status": str(self.status), "status_trigger": self.status_trigger,
                "replica_states": self.replica_states, "message": self.message}


class ApplicationStatusOverview(_View):
    """One application: `status`, `message`, `last_deployed_time_s`, `import_path`, `deployments` by name."""

    __slots__ = ()

    @property
    def status(self) -> ApplicationStatus:
        return ApplicationStatus(self._raw["status"])

    @property
    def deployments(self) -> dict[str, DeploymentStatusOverview]:
        return {name: DeploymentStatusOverview(d) for name, d in sorted(self._raw.get("deployments", {}).items())}

    @property
    def message(self) -> str:
        """Why the application is unhealthy: its unhealthy deployments' messages ("" otherwise)."""
        return "; ".join(f"deployment {name}: {d.message}" for name, d in self.deployments.items()
                         if d.status == DeploymentStatus.UNHEALTHY and d.message)

    @property
    def last_deployed_time_s(self) -> float | None:
        return self._raw.get("last_deployed_time_s")

    @property
    def import_path(self) -> str | None:
        """Where the application came from (zeroserve's; Ray shows it as its deployed config's
        `import_path`): the config's or `serve run`'s `module:app`, or for `serve.run(app)`
        the ingress's `module:QualName` (None: deployed with `Deployment.deploy()`). Not
        in the printed YAML, which keeps Ray's shape."""
        return self._raw.get("import_path")

    def to_dict(self) -> dict[str, Any]:
        return {"status": str(self.status), "message": self.message, "last_deployed_time_s": self.last_deployed_time_s,
                "deployments": {name: d.to_dict() for name, d in self.deployments.items()}}


class ServeStatus(_View):
    """Serve as a whole: `proxies` ({node id: state}), `applications` by name,
    `target_capacity` (always None: not supported). `print(status)` prints Ray's YAML shape."""

    __slots__ = ()

    @property
    def proxies(self) -> dict[str, ProxyStatus]:
        return {node: ProxyStatus(p["state"]) for node, p in sorted((self._raw.get("proxies") or {}).items())}

    @property
    def applications(self) -> dict[str, ApplicationStatusOverview]:
        return {name: ApplicationStatusOverview(a) for name, a in sorted(self._raw.get("applications", {}).items())}

    @property
    def target_capacity(self) -> None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"proxies": {node: str(state) for node, state in self.proxies.items()},
                "applications": {name: a.to_dict() for name, a in self.applications.items()},
                "target_capacity": None}
