"""What a deploy changes, checked before anything changes: the targets to apply, the
deployments to delete, and the conflicts that refuse it.

Three kinds of deploy:
- an application deployed by `serve.run(app, name=A)`: A's deployments become exactly the
  new targets (A's deployments missing from them are deleted), other applications stay;
- a config file (`zeroserve serve deploy`): every application it names is deployed so, and
  the applications it does not name are deleted;
- a 1.x `Deployment.deploy()`: its one target is added (or updated), nothing is deleted.

Refused with `ConflictError`, naming both sides, when after the deploy two deployments
would serve one route prefix, or a deployment name would belong to two applications
(names are unique across applications).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..exceptions import ConflictError
from ..messages import DeploymentTarget
from .deployment_state import DeploymentState

__all__ = ["DeployPlan", "plan_deploy"]


@dataclass(frozen=True, slots=True)
class DeployPlan:
    targets: tuple[DeploymentTarget, ...]
    removed: tuple[str, ...]  # deployments to delete


def plan_deploy(current: Mapping[str, DeploymentState], apps: Mapping[str, list[DeploymentTarget]], *,
                replace_apps: bool = True, exclusive: bool = False) -> DeployPlan:
    """The plan of deploying `apps` ({application: its targets}) over `current`.
    `replace_apps`: each named application becomes exactly its targets; `exclusive`:
    applications not named are deleted too."""
    live = {name: s.target for name, s in current.items() if not s.deleting}
    incoming: dict[str, DeploymentTarget] = {}
    for app, targets in apps.items():
        for t in targets:
            if t.app != app:
                raise ValueError(f"target {t.name} of application {t.app!r} was given for application {app!r}")
            if t.name in incoming:
                raise ConflictError(f"deployment {t.name!r} is part of applications {incoming[t.name].app!r} and "
                                    f"{app!r}; deployment names are unique across applications (rename one with "
                                    ".options(name=...))")
            incoming[t.name] = t
    removed = [name for name, t in live.items() if name not in incoming and (
        exclusive or (replace_apps and t.app in apps))]
    final = {name: t for name, t in live.items() if name not in removed}
    for name, t in incoming.items():
        held = final.get(name)
        if held is not None and held.app != t.app:
            raise ConflictError(f"deployment {name!r} already belongs to application {held.app!r}; application "
                                f"{t.app!r} cannot take it (deployment names are unique across applications): "
                                f"delete {held.app!r} first, or rename one with .options(name=...)")
        final[name] = t
    routes: dict[str, DeploymentTarget] = {}
    for name in sorted(final, key=lambda n: n in incoming):  # the ones serving now first
        t = final[name]
        if t.route_prefix is None:
            continue
        other = routes.get(t.route_prefix)
        if other is not None:
            raise ConflictError(f"route prefix {t.route_prefix!r} is claimed by deployment {other.name!r} of "
                                f"application {other.app!r} and by {t.name!r} of application {t.app!r}; "
                                "give one of them another route_prefix")
        routes[t.route_prefix] = t
    return DeployPlan(tuple(incoming.values()), tuple(removed))
