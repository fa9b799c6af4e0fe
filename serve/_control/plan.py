"""What a deploy changes, checked before anything changes: the targets to apply, the
deployments to delete, and the conflicts that refuse it.

Three kinds of deploy:
- an application deployed by `serve.run(app, name=A)`: A's deployments become exactly the
  new targets (A's deployments missing from them are deleted), other applications stay;
- a config file (`zeroserve serve deploy`): every application it names is deployed so, and
  the applications it does not name are deleted;
- a 1.x `Deployment.deploy()`: its one target is added (or updated), nothing is deleted.

Deployment names are scoped by application (two applications may each have a `Model`,
as in Ray). Refused with `ConflictError`, naming both sides, when after the deploy two
deployments would serve one route prefix, or one application lists a name twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..exceptions import ConflictError
from ..messages import DeploymentId, DeploymentTarget
from .deployment_state import DeploymentState

__all__ = ["DeployPlan", "plan_deploy"]


@dataclass(frozen=True, slots=True)
class DeployPlan:
    targets: tuple[DeploymentTarget, ...]
    removed: tuple[DeploymentId, ...]  # deployments to delete


def plan_deploy(current: Mapping[DeploymentId, DeploymentState], apps: Mapping[str, list[DeploymentTarget]], *,
                replace_apps: bool = True, exclusive: bool = False) -> DeployPlan:
    """The plan of deploying `apps` ({application: its targets}) over `current`.
    `replace_apps`: each named application becomes exactly its targets; `exclusive`:
    applications not named are deleted too."""
    live = {dep_id: s.target for dep_id, s in current.items() if not s.deleting}
    incoming: dict[DeploymentId, DeploymentTarget] = {}
    for app, targets in apps.items():
        for t in targets:
            if t.app != app:
                raise ValueError(f"target {t.name} of application {t.app!r} was given for application {app!r}")
            if t.id in incoming:
                raise ConflictError(f"application {app!r} has two deployments named {t.name!r}; rename one with "
                                    ".options(name=...)")
            incoming[t.id] = t
    removed = [dep_id for dep_id in live if dep_id not in incoming and (
        exclusive or (replace_apps and dep_id.app in apps))]
    final = {dep_id: t for dep_id, t in live.items() if dep_id not in removed}
    final.update(incoming)
    routes: dict[str, DeploymentTarget] = {}
    for dep_id in sorted(final, key=lambda d: d in incoming):  # the ones serving now first
        t = final[dep_id]
        if t.route_prefix is None:
            continue
        other = routes.get(t.route_prefix)
        if other is not None:
            raise ConflictError(f"route prefix {t.route_prefix!r} is claimed by deployment {other.name!r} of "
                                f"application {other.app!r} and by {t.name!r} of application {t.app!r}; "
                                "give one of them another route_prefix")
        routes[t.route_prefix] = t
    return DeployPlan(tuple(incoming.values()), tuple(removed))
