"""A router's exchange with the controller: the replica set it follows, the load it reports.

The replica set comes by long poll under `replica_set_key(deployment)` (pushed, not polled
per request); while the controller is away, the last set stays in use. `apply` takes each
pushed set: its replicas (and the models they hold), their methods, the queue bound; calls
waiting when the deployment turns unavailable with no replica fail at once, and waiting
calls are woken when there is room. While the deployment autoscales, the router reports
its load (requests in flight and waiting) every `metrics_interval_s`.
`ReplicaSetSubscriber` is a mixin of `router.Router`, which owns the state and the poll.
"""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

from actors import ActorHandle
from actors.system import Update

from ..messages import DeploymentId, ReplicaId, ReplicaInfo, ReplicaSet
from .outcomes import ignore_outcome

if TYPE_CHECKING:
    from ..exceptions import DeploymentUnavailableError
    from .model_routing import ModelLocator

__all__ = ["ReplicaSetSubscriber", "replica_set_key"]


def replica_set_key(deployment: DeploymentId) -> str:
    """The controller's long-poll key of a deployment's replica set."""
    return f"replicas/{deployment}"


class ReplicaSetSubscriber:
    """The controller-facing side of `Router`."""

    if TYPE_CHECKING:  # set by Router
        deployment: DeploymentId
        _controller: ActorHandle
        _source: str
        _models: ModelLocator | None
        _replicas: tuple[ReplicaInfo, ...]
        _max_queued: int
        _methods: frozenset[str] | None
        _in_flight: dict[ReplicaId, int]
        _waiting: collections.deque[asyncio.Future]
        _have_set: asyncio.Event
        _missing: bool
        _unavailable: str
        _report_every: float | None

        def _unavailable_error(self) -> DeploymentUnavailableError: ...

        def _has_room(self) -> bool: ...

        def _wake(self, n: int = 1) -> None: ...

    @property
    def replicas(self) -> tuple[ReplicaInfo, ...]:
        return self._replicas

    def apply(self, update: Update) -> None:
        """Take a replica set from the controller (`exists=False`: no such deployment)."""
        self._missing = not update.exists
        rs = update.value if update.exists and update.value is not None else ReplicaSet(self.deployment, ())
        self._replicas = rs.replicas
        if self._models is not None:
            self._models.update(rs.replicas)
        self._max_queued = rs.max_queued_requests
        self._unavailable = rs.unavailable
        if rs.unavailable and not rs.replicas:  # nothing will come for the waiting calls: fail them
            while self._waiting:
                fut = self._waiting.popleft()
                if not fut.done():
                    fut.set_exception(self._unavailable_error())
        self._report_every = rs.metrics_interval_s
        self._methods = None if rs.methods is None else frozenset(rs.methods)
        live = {r.replica_id for r in rs.replicas}
        for rid in [k for k in self._in_flight if k not in live and self._in_flight[k] == 0]:
            del self._in_flight[rid]
        self._have_set.set()
        if self._waiting and self._has_room():
            self._wake()  # each one that gets a slot hands on to the next

    @property
    def load(self) -> int:
        """Requests this caller has in flight or waiting for this deployment."""
        return sum(self._in_flight.values()) + len(self._waiting)

    async def _report(self) -> None:
        """Report load to the controller while the deployment autoscales."""
        while True:
            await asyncio.sleep(self._report_every or 1.0)
            if self._report_every is None:
                continue
            self._report_now()

    def _report_now(self) -> None:
        """Report this caller's load to the controller (requests in flight and waiting)."""
        ref = self._controller.record_load.remote(self._source, self.deployment, float(self.load))
        ref.future().add_done_callback(ignore_outcome)  # best effort: the next report follows
