"""The controller's API for changes: deploy and delete, answered once they are durable.

`DeploymentChanges` is a mixin of `ServeController` (which owns the state it changes): a
change is planned (`plan`), applied to the deployments, stepped once at once (the others
wait for the loop, kicked) and saved.

Durability: a deploy or delete answers only once the records of the deployments it changed
are written (else it raises `ServeError`, and the controller keeps retrying the write); a
deployment whose record could never be stored (over the head's cap on a value) is refused
at the deploy, before anything changes (`DeploymentTooLargeError`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

from .._data.client import STATUS_KEY
from ..exceptions import ServeError
from ..messages import DeploymentId, DeploymentTarget
from .checkpoint import check_record_size
from .deployment_state import DeploymentState
from .plan import DeployPlan, plan_deploy

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from actors.system import LongPollHost

    from .io import ControllerIO
    from .publish import Publisher
    from .records import RecordKeeper
    from .rollout import StartBudget
    from .schedule import Schedule

__all__ = ["DeploymentChanges", "version_base"]

log = logging.getLogger("serve._control.controller")  # the controller's logger: its lines name it as they did


class DeploymentChanges:
    """The changing side of `ServeController`."""

    if TYPE_CHECKING:  # set by ServeController
        io: ControllerIO
        clock: Callable[[], float]
        deployments: dict[DeploymentId, DeploymentState]
        schedule: Schedule[DeploymentId]
        published: Publisher
        records: RecordKeeper
        starts: StartBudget | None
        polls: LongPollHost[str, Any]
        _kick: asyncio.Event
        _max_value_bytes: int | None
        _deployed_at: dict[str, float]

        async def ready(self) -> None: ...

        def _reconcile(self, now: float, only: list[DeploymentId] | None = None) -> None: ...

        async def _checkpoint(self, now: float, retry: bool = False) -> None: ...

    async def _saved_or_raise(self, ids: list[DeploymentId]) -> None:
        """After a change: write the records now; ServeError if those of `ids` could not be."""
        await self._checkpoint(self.clock(), retry=True)
        unsaved = self.records.unsaved(ids, self.deployments)
        if unsaved:
            errors = set(unsaved.values()) - {""}
            raise ServeError(f"the change of {', '.join(map(str, unsaved))} was made but could not be saved in the "
                             f"head's KV ({'; '.join(sorted(errors)) or 'unknown error'}); the controller keeps "
                             "trying, and a controller restart before it succeeds would lose the change")

    def _check_sizes(self, targets: tuple[DeploymentTarget, ...]) -> None:
        if self._max_value_bytes is not None:
            for t in targets:
                check_record_size(t, self._max_value_bytes)

    # -- API for drivers ---------------------------------------------------------------
    async def deploy(self, targets: list[DeploymentTarget]) -> dict[DeploymentId, bool]:
        """Add or update deployments (1.x `Deployment.deploy()`); returns {deployment: changed}.
        ConflictError (nothing changed) if one would take another's route or name."""
        await self.ready()
        apps: dict[str, list[DeploymentTarget]] = {}
        for t in targets:
            apps.setdefault(t.app, []).append(t)
        return await self._deploy(plan_deploy(self.deployments, apps, replace_apps=False))

    async def deploy_apps(self, apps: dict[str, list[DeploymentTarget]],
                          exclusive: bool = False) -> dict[DeploymentId, bool]:
        """Deploy applications: each becomes exactly its targets (its other deployments are
        deleted); with `exclusive`, applications not named are deleted too (a config file).
        Returns {deployment: changed}; ConflictError (nothing changed) on a route clash."""
        await self.ready()
        return await self._deploy(plan_deploy(self.deployments, apps, exclusive=exclusive))

    async def _deploy(self, plan: DeployPlan) -> dict[DeploymentId, bool]:
        """Refuse a target too large to keep (nothing changes), apply the plan, and answer
        once the changed deployments' records are saved."""
        if self._max_value_bytes is None:
            self._max_value_bytes = await self.io.max_value_bytes()
        self._check_sizes(plan.targets)
        out = self._apply(plan)
        await self._saved_or_raise([t.id for t in plan.targets] + list(plan.removed))
        return out

    def _apply(self, plan: DeployPlan) -> dict[DeploymentId, bool]:
        out = {}
        default_logging = self.io.settings.logging_config
        self._deployed_at.update({t.app: time.time() for t in plan.targets})
        for target in plan.targets:
            if target.config.logging_config is None and default_logging is not None:  # Serve's default
                target = dataclasses.replace(target, config=target.config.model_copy(
                    update={"logging_config": default_logging}))
            state = self.deployments.get(target.id)
            self.schedule.touch(target.id)
            self.published.app_deployed(target.app)
            log.info("deploy %s (application %s, version %s)", target.name, target.app, target.version)
            if state is None:
                self.deployments[target.id] = DeploymentState(target, self.io.replicas, version_base=version_base())
                self.deployments[target.id].starts = self.starts
                out[target.id] = True
            else:
                if target.version_given and target.version == state.target.version:
                    # Same code version: only the config may change (replicas, user_config...).
                    target = _same_code(state.target, target)
                out[target.id] = state.update(target)
        for dep_id in plan.removed:
            self.deployments[dep_id].delete()
            self.schedule.touch(dep_id)
        self._reconcile(self.clock(), [t.id for t in plan.targets] + list(plan.removed))
        self._kick.set()
        return out

    async def delete(self, ids: list[DeploymentId], durable: bool = True) -> None:
        """Delete deployments; with `durable`, answer once the deletions are saved (the
        shutdown, which drops every record, does not wait for that)."""
        await self.ready()
        for dep_id in ids:
            if dep_id in self.deployments:
                log.info("delete %s (application %s)", dep_id.name, dep_id.app)
                self.deployments[dep_id].delete()
                self.schedule.touch(dep_id)
        self._reconcile(self.clock(), [d for d in ids if d in self.deployments])
        self._kick.set()
        if durable:
            await self._saved_or_raise(ids)

    async def delete_app(self, app: str) -> list[DeploymentId]:
        await self.ready()
        ids = [d for d in self.deployments if d.app == app]
        await self.delete(ids)
        return ids

    async def wait_gone(self, ids: list[DeploymentId], deadline: float) -> bool:
        """Until none of `ids` is a deployment any more (True), or the deadline (False)."""
        version = -1
        while any(d in self.deployments for d in ids):
            left = deadline - self.clock()
            if left <= 0:
                return False
            version = (await self.polls.listen(STATUS_KEY, version, min(left, 1.0))).version
        return True


def version_base() -> int:
    """Where a replica set's versions start: the wall clock in µs, so a re-created
    deployment (or a restarted controller) starts above any version a router may hold."""
    return time.time_ns() // 1000


def _same_code(current: DeploymentTarget, new: DeploymentTarget) -> DeploymentTarget:
    """Keep the running code (its replicas stay) while taking the new config."""
    return dataclasses.replace(new, code=current.code)
