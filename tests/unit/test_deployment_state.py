"""Unit tests of one deployment's replica state machine (`serve._control.deployment_state`).

`DeploymentState.step(now)` runs against a `FakeIO` (the `ReplicaIO` seam): starts, kills
and calls are recorded, and every pending call (`ready`, `check_health`,
`prepare_for_shutdown`, `reconfigure`) is completed by hand, so each test decides exactly
what the replicas answer and when. No processes, sockets or sleeps; time is a float.

Contract under test (module docstring and methods):
- replicas go STARTING --ready--> RUNNING --stop--> STOPPING --> gone; a failed `ready`
  kills the replica and starts another; after MAX_START_FAILURES consecutive failures with
  nothing RUNNING the deployment is UNHEALTHY (last error in `message`) and stops retrying
  until it is redeployed;
- `routing_version` changes exactly when the set of RUNNING replicas changes;
- scaling down kills STARTING replicas first and drains RUNNING ones with
  `prepare_for_shutdown`, killing them when that answers or after a deadline;
- health checks every `health_check_period_s`; HEALTH_FAILURES failures, an actor death, or
  no answer within `health_check_timeout_s` replace the replica;
- a rolling update starts new replicas before stopping old ones, at most
  max(1, ceil(0.2 * N)) new ones starting at a time, and never lets RUNNING drop below N;
- a `user_config` change with the same version reconfigures RUNNING replicas in place;
- `delete()` drains everything, then `finished`; autoscaling drives `desired`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

import actors
from serve._config import DeploymentConfig
from serve._control.deployment_state import (
    HEALTH_FAILURES,
    MAX_START_BACKOFF_S,
    MAX_START_FAILURES,
    START_BACKOFF_S,
    DeploymentState,
)
from serve.messages import DeploymentId, DeploymentTarget

# ---------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------


class _NotDone(Exception):
    """Raised by `FakePending.result` when the call has not been completed yet."""


@dataclass(eq=False)
class FakeHandle:
    """A replica as the fake runtime knows it: who it is and which target started it."""

    replica_id: str
    target: DeploymentTarget
    killed: bool = False

    @property
    def version(self) -> str:
        return self.target.version

    def __repr__(self) -> str:
        return f"<FakeHandle {self.replica_id} {self.version}{' killed' if self.killed else ''}>"


@dataclass(eq=False)
class FakePending:
    """A call the test completes by hand with `succeed()` or `fail()`."""

    handle: FakeHandle
    method: str
    args: tuple[Any, ...]
    _done: bool = False
    _value: Any = None
    _error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Any:
        if not self._done:
            raise _NotDone(f"{self.method} on {self.handle.replica_id} is still pending")
        if self._error is not None:
            raise self._error
        return self._value

    def succeed(self, value: Any = None) -> None:
        assert not self._done, "completed twice"
        self._done, self._value = True, value

    def fail(self, error: BaseException) -> None:
        assert not self._done, "completed twice"
        self._done, self._error = True, error


@dataclass
class FakeIO:
    """Records everything a DeploymentState does outside itself, and checks it is sane."""

    handles: list[FakeHandle] = field(default_factory=list)
    calls: list[FakePending] = field(default_factory=list)
    kills: list[FakeHandle] = field(default_factory=list)
    events: list[tuple[str, FakeHandle, str]] = field(default_factory=list)  # (kind, handle, method)
    placements: list[FakePending] = field(default_factory=list)  # placement questions asked

    def start(self, target: DeploymentTarget, replica_id: str) -> FakeHandle:
        assert all(h.replica_id != replica_id for h in self.handles), f"replica id {replica_id} reused"
        handle = FakeHandle(replica_id, target)
        self.handles.append(handle)
        self.events.append(("start", handle, ""))
        return handle

    def call(self, handle: FakeHandle, method: str, *args: Any) -> FakePending:
        assert handle in self.handles, "call on a handle this IO never started"
        assert not handle.killed, f"{method} called on killed replica {handle.replica_id}"
        pending = FakePending(handle, method, args)
        self.calls.append(pending)
        self.events.append(("call", handle, method))
        return pending

    def placement(self, handle: FakeHandle) -> FakePending:
        """Where the head has a starting replica: the test answers (or never does)."""
        pending = FakePending(handle, "placement", ())
        self.placements.append(pending)
        return pending

    def kill(self, handle: FakeHandle) -> None:
        assert handle in self.handles, "kill of a handle this IO never started"
        assert not handle.killed, f"replica {handle.replica_id} killed twice"
        handle.killed = True
        self.kills.append(handle)
        self.events.append(("kill", handle, ""))

    # -- queries for the tests ----------------------------------------------------------
    def calls_of(self, method: str, handle: FakeHandle | None = None) -> list[FakePending]:
        return [p for p in self.calls if p.method == method and (handle is None or p.handle is handle)]

    def pending(self, method: str, handle: FakeHandle | None = None) -> list[FakePending]:
        return [p for p in self.calls_of(method, handle) if not p.done()]

    def started(self, version: str | None = None) -> list[FakeHandle]:
        return [h for h in self.handles if version is None or h.version == version]

    def alive(self) -> list[FakeHandle]:
        return [h for h in self.handles if not h.killed]


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def make_target(version: str = "v1", num_replicas: int = 1, *, name: str = "d", **config: Any) -> DeploymentTarget:
    return DeploymentTarget(
        name=name, app="default", version=version, code=b"",
        config=DeploymentConfig(num_replicas=num_replicas, **config),
        route_prefix=None, is_function=False,
    )


def ready_all(io: FakeIO) -> int:
    """Answer every pending `ready` successfully; how many were answered."""
    pending = io.pending("ready")
    for p in pending:
        p.succeed({})
    return len(pending)


def running_state(n: int, now: float = 0.0, **config: Any) -> tuple[DeploymentState, FakeIO]:
    """A deployment of `n` RUNNING v1 replicas, settled at time `now`."""
    io = FakeIO()
    state = DeploymentState(make_target("v1", n, **config), io)
    state.step(now)
    ready_all(io)
    state.step(now)
    assert len(state.running()) == n and state.status == "HEALTHY"
    return state, io


def handle_of(state: DeploymentState, replica_id: str) -> FakeHandle:
    return state.replicas[replica_id].handle


def states_by_version(state: DeploymentState, version: str, kind: str) -> int:
    return sum(1 for r in state.replicas.values() if r.version == version and r.state == kind)


def answer_health(state: DeploymentState, io: FakeIO, now: float, error: BaseException | None = None) -> None:
    """Step at `now` (a check falls due), answer the one pending check, step again to see it."""
    state.step(now)
    pending = io.pending("check_health")
    assert len(pending) == 1, f"expected one health check in flight at t={now}, got {pending}"
    if error is None:
        pending[0].succeed(None)
    else:
        pending[0].fail(error)
    state.step(now)


# ---------------------------------------------------------------------------------------
# Scaling up, STARTING -> RUNNING, routing_version
# ---------------------------------------------------------------------------------------


def test_a_new_deployment_starts_n_replicas_each_asked_ready() -> None:
    io = FakeIO()
    target = make_target("v1", 3)
    state = DeploymentState(target, io)
    assert state.desired == 3 and state.status == "UPDATING"

    assert state.step(0.0) is False  # nothing RUNNING yet: the routing set did not change
    assert len(io.handles) == 3
    assert all(h.target == target for h in io.handles)
    assert len({h.replica_id for h in io.handles}) == 3
    assert all(h.replica_id.deployment.name == "d" and h.replica_id.tag for h in io.handles)
    assert [len(io.calls_of("ready", h)) for h in io.handles] == [1, 1, 1]
    assert state.counts() == {"STARTING": 3}
    assert state.running() == [] and state.routing_version == 0

    state.step(1.0)  # still waiting: no second start, no second ready
    assert len(io.handles) == 3 and len(io.calls_of("ready")) == 3


def test_scale_up_from_zero_replicas() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 0), io)
    state.step(0.0)
    assert io.handles == [] and state.status == "HEALTHY" and state.desired == 0

    assert state.update(make_target("v1", 4)) is True
    assert state.status == "UPDATING"
    state.step(1.0)
    assert len(io.handles) == 4 and state.counts() == {"STARTING": 4}
    ready_all(io)
    assert state.step(2.0) is True
    assert state.counts() == {"RUNNING": 4} and state.status == "HEALTHY"
    assert len(io.handles) == 4 and io.kills == []


def test_ready_moves_a_replica_to_running_and_bumps_routing_version_only_on_change() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 2), io)
    state.step(0.0)
    first, second = io.calls_of("ready")

    first.succeed({})
    assert state.step(0.1) is True
    assert state.routing_version == 1
    assert [r.handle for r in state.running()] == [first.handle]
    assert state.status == "UPDATING"  # one of two

    for t in (0.2, 0.3, 0.4):  # nothing changed: no bump
        assert state.step(t) is False
    assert state.routing_version == 1

    second.succeed({})
    assert state.step(0.5) is True
    assert state.routing_version == 2
    assert {r.handle for r in state.running()} == {first.handle, second.handle}
    assert state.status == "HEALTHY" and state.message == ""
    assert state.step(0.6) is False and state.routing_version == 2


def test_a_failed_start_does_not_touch_the_routing_set() -> None:
    state, io = running_state(1)
    version = state.routing_version
    state.update(make_target("v1", 2))
    state.step(1.0)
    io.pending("ready")[0].fail(RuntimeError("bad"))
    assert state.step(1.1) is False
    assert state.routing_version == version


# ---------------------------------------------------------------------------------------
# Scaling down
# ---------------------------------------------------------------------------------------


def test_scale_down_stops_starting_replicas_first_without_draining() -> None:
    state, io = running_state(3)
    running = {r.handle for r in state.running()}
    state.update(make_target("v1", 5))
    state.step(1.0)
    starting = [h for h in io.handles if h not in running]
    assert len(starting) == 2

    state.update(make_target("v1", 3))
    assert state.step(2.0) is False  # the RUNNING set is untouched
    assert set(io.kills) == set(starting)
    assert io.calls_of("prepare_for_shutdown") == []  # never served: no drain
    assert {r.handle for r in state.running()} == running
    assert state.counts() == {"RUNNING": 3} and state.status == "HEALTHY"


def test_scale_down_with_starting_and_running_kills_starting_and_drains_the_rest() -> None:
    state, io = running_state(3)
    running = {r.handle for r in state.running()}
    state.update(make_target("v1", 5))
    state.step(1.0)
    starting = {h for h in io.handles if h not in running}

    state.update(make_target("v1", 2))
    assert state.step(2.0) is True
    assert set(io.kills) == starting
    drained = [p.handle for p in io.calls_of("prepare_for_shutdown")]
    assert len(drained) == 1 and drained[0] in running
    assert state.counts() == {"RUNNING": 2, "STOPPING": 1}


def test_scale_down_drains_running_replicas_then_kills_them_when_drained() -> None:
    state, io = running_state(3, graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=7.0)
    version = state.routing_version
    state.update(make_target("v1", 1, graceful_shutdown_wait_loop_s=0.5, graceful_shutdown_timeout_s=7.0))

    assert state.step(1.0) is True  # two replicas left the routing set before draining
    assert state.routing_version == version + 1
    shutdowns = io.calls_of("prepare_for_shutdown")
    assert len(shutdowns) == 2
    assert all(p.args == (0.5, 7.0) for p in shutdowns)
    assert state.counts() == {"RUNNING": 1, "STOPPING": 2}
    assert len(state.running()) == 1
    assert all(p.handle not in {r.handle for r in state.running()} for p in shutdowns)
    assert io.kills == []  # draining, not killed
    assert state.status == "UPDATING"

    shutdowns[0].succeed(None)
    state.step(1.5)
    assert io.kills == [shutdowns[0].handle]
    assert shutdowns[0].handle.replica_id not in state.replicas
    assert state.counts() == {"RUNNING": 1, "STOPPING": 1}

    shutdowns[1].succeed(None)
    assert state.step(2.0) is False  # already out of the routing set
    assert set(io.kills) == {p.handle for p in shutdowns}
    assert state.counts() == {"RUNNING": 1} and state.status == "HEALTHY"
    assert len(io.calls_of("prepare_for_shutdown")) == 2  # asked once each


def test_a_replica_that_never_finishes_draining_is_killed_after_the_deadline() -> None:
    timeout = 20.0
    cfg: dict[str, Any] = dict(graceful_shutdown_timeout_s=timeout, health_check_period_s=1e6)
    state, io = running_state(2, **cfg)
    state.update(make_target("v1", 1, **cfg))
    state.step(100.0)
    (shutdown,) = io.calls_of("prepare_for_shutdown")

    for t in (101.0, 110.0, 100.0 + timeout):  # the replica may use its whole graceful timeout
        state.step(t)
        assert io.kills == [], f"killed at t={t} while still within graceful_shutdown_timeout_s"
    state.step(100.0 + timeout + 30.0)
    assert io.kills == [shutdown.handle]
    assert state.counts() == {"RUNNING": 1} and state.status == "HEALTHY"


def test_a_failed_prepare_for_shutdown_still_ends_in_a_kill() -> None:
    state, io = running_state(2)
    state.update(make_target("v1", 1))
    state.step(1.0)
    (shutdown,) = io.calls_of("prepare_for_shutdown")
    shutdown.fail(actors.ActorDiedError("actor is dead"))
    state.step(1.1)
    assert io.kills == [shutdown.handle]
    assert state.counts() == {"RUNNING": 1}


# ---------------------------------------------------------------------------------------
# Constructor failures
# ---------------------------------------------------------------------------------------


def fail_next_start(state: DeploymentState, io: FakeIO, now: float, text: str = "boom in __init__") -> FakeHandle:
    """Fail the one starting replica, then step past the start back-off."""
    (pending,) = io.pending("ready")
    pending.fail(RuntimeError(text))
    state.step(now)
    if state.next_start_at > now:
        state.step(state.next_start_at)
    return pending.handle


def test_a_failed_ready_kills_the_replica_and_starts_another() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    failed = fail_next_start(state, io, 0.1)
    assert io.kills == [failed]
    assert failed.replica_id not in state.replicas
    assert len(io.handles) == 2 and io.handles[1] is not failed
    assert state.counts() == {"STARTING": 1}
    assert state.status == "UPDATING"
    assert "boom in __init__" in state.message and "RuntimeError" in state.message

    io.pending("ready")[0].succeed({})
    state.step(0.2)
    assert state.status == "HEALTHY" and state.message == ""
    assert len(state.running()) == 1


def test_max_start_failures_with_nothing_running_is_unhealthy_and_stops_retrying() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    for i in range(MAX_START_FAILURES):
        assert state.status != "UNHEALTHY", f"unhealthy after only {i} failures"
        fail_next_start(state, io, 0.1 * (i + 1), text=f"boom in __init__ #{i}")

    assert state.status == "UNHEALTHY"
    assert f"boom in __init__ #{MAX_START_FAILURES - 1}" in state.message
    assert len(io.handles) == MAX_START_FAILURES
    assert io.alive() == []
    for t in (1.0, 10.0, 100.0, 1000.0):
        state.step(t)
    assert len(io.handles) == MAX_START_FAILURES, "an UNHEALTHY deployment kept starting replicas"
    assert state.status == "UNHEALTHY" and state.desired == 1


def test_failures_count_only_consecutively() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    for i in range(MAX_START_FAILURES - 1):
        fail_next_start(state, io, 0.1 * (i + 1))
    io.pending("ready")[0].succeed({})  # a success resets the count
    state.step(1.0)
    (r,) = state.running()

    answer_health(state, io, 1.0 + r.health.next_at, actors.ActorDiedError("actor is dead"))  # replaced
    assert io.pending("ready"), "the dead replica was not replaced"
    for i in range(MAX_START_FAILURES - 1):
        fail_next_start(state, io, 20.0 + i)
        assert state.status != "UNHEALTHY", "failures before the last success were counted"
    fail_next_start(state, io, 30.0)
    assert state.status == "UNHEALTHY"


def test_start_failures_with_a_replica_running_keep_retrying() -> None:
    state, io = running_state(1)
    state.update(make_target("v1", 2))
    state.step(1.0)
    for i in range(MAX_START_FAILURES * 3):
        fail_next_start(state, io, 2.0 + i * 0.01)
        assert state.status == "UPDATING"
    assert len(io.pending("ready")) == 1  # still trying
    assert len(state.running()) == 1


def test_failed_starts_back_off_exponentially_up_to_a_cap() -> None:
    state, io = running_state(1, health_check_period_s=1e6)
    state.update(make_target("v1", 2, health_check_period_s=1e6))
    now = 1.0
    state.step(now)
    delays = []
    for _ in range(12):
        (pending,) = io.pending("ready")
        pending.fail(RuntimeError("boom"))
        state.step(now)
        wait = state.next_start_at - now
        delays.append(round(wait, 3))
        assert "retrying in" in state.message
        state.step(now + wait * 0.99)
        assert io.pending("ready") == [], "a replica started before its back-off ran out"
        now += wait
        state.step(now)
    assert delays[:4] == [START_BACKOFF_S, 2 * START_BACKOFF_S, 4 * START_BACKOFF_S, 8 * START_BACKOFF_S]
    assert max(delays) == MAX_START_BACKOFF_S and delays[-1] == MAX_START_BACKOFF_S
    assert len(state.running()) == 1 and state.status == "UPDATING"

    io.pending("ready")[0].succeed({})  # a success resets the back-off
    state.step(now)
    assert state.status == "HEALTHY" and state.start_failures == 0


def test_a_redeploy_clears_the_start_back_off() -> None:
    state, io = running_state(1)
    state.update(make_target("v1", 2))
    state.step(1.0)
    for i in range(6):
        fail_next_start(state, io, 2.0 + i)
    (pending,) = io.pending("ready")
    pending.fail(RuntimeError("boom"))
    state.step(20.0)
    assert state.next_start_at > 20.0 and io.pending("ready") == []
    state.update(make_target("v2", 2))
    state.step(20.0)
    assert len(io.pending("ready")) >= 1, "a redeploy waited out the old version's back-off"


def test_a_redeploy_resets_an_unhealthy_deployment() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    for i in range(MAX_START_FAILURES):
        fail_next_start(state, io, 0.1 * (i + 1))
    assert state.status == "UNHEALTHY"

    fixed = make_target("v2", 1)
    assert state.update(fixed) is True
    assert state.status == "UPDATING" and state.message == ""
    state.step(5.0)
    assert len(io.handles) == MAX_START_FAILURES + 1
    assert io.handles[-1].target == fixed
    for i in range(MAX_START_FAILURES - 1):  # the count starts from zero again
        fail_next_start(state, io, 6.0 + i)
        assert state.status == "UPDATING"
    io.pending("ready")[0].succeed({})
    state.step(10.0)
    assert state.status == "HEALTHY"
    assert [r.version for r in state.running()] == ["v2"]


def test_redeploying_the_same_target_retries_an_unhealthy_deployment() -> None:
    io = FakeIO()
    target = make_target("v1", 1)
    state = DeploymentState(target, io)
    state.step(0.0)
    for i in range(MAX_START_FAILURES):
        fail_next_start(state, io, 0.1 * (i + 1))
    assert state.update(target) is True
    state.step(1.0)
    assert len(io.pending("ready")) == 1


def test_the_same_target_again_changes_nothing() -> None:
    state, io = running_state(2)
    equal = make_target("v1", 2)  # equal, not identical
    assert equal is not state.target
    assert state.update(equal) is False
    assert state.update(state.target) is False
    state.step(1.0)
    assert len(io.handles) == 2 and io.kills == [] and state.status == "HEALTHY"
    assert state.update(make_target("v1", 3)) is True


# ---------------------------------------------------------------------------------------
# Health checks
# ---------------------------------------------------------------------------------------


def test_health_checks_start_after_the_period_and_one_at_a_time() -> None:
    state, io = running_state(1, health_check_period_s=10.0)
    state.step(9.9)
    assert io.calls_of("check_health") == []
    state.step(10.0)
    assert len(io.calls_of("check_health")) == 1
    state.step(11.0)
    state.step(15.0)
    assert len(io.calls_of("check_health")) == 1, "a second check while the first is in flight"

    io.pending("check_health")[0].succeed(None)
    state.step(16.0)  # answered at 16: the next one is due at 26
    state.step(25.9)
    assert len(io.calls_of("check_health")) == 1
    state.step(26.0)
    assert len(io.calls_of("check_health")) == 2
    assert io.kills == [] and state.status == "HEALTHY"


def test_health_failures_below_the_limit_keep_the_replica() -> None:
    state, io = running_state(1, health_check_period_s=10.0)
    (r,) = state.running()
    t = 10.0
    for _ in range(HEALTH_FAILURES - 1):
        answer_health(state, io, t, ValueError("unwell"))
        t += 10.0
    assert io.kills == [] and state.running() == [r] and state.status == "HEALTHY"

    answer_health(state, io, t, None)  # an answer resets the count
    t += 10.0
    for _ in range(HEALTH_FAILURES - 1):
        answer_health(state, io, t, ValueError("unwell"))
        t += 10.0
    assert io.kills == [] and state.running() == [r]


def test_health_failures_at_the_limit_replace_the_replica() -> None:
    state, io = running_state(1, health_check_period_s=10.0)
    (r,) = state.running()
    version = state.routing_version
    t = 10.0
    for _ in range(HEALTH_FAILURES):
        answer_health(state, io, t, ValueError("unwell"))
        t += 10.0
    assert io.kills == [r.handle]
    assert r.replica_id not in state.replicas
    assert state.routing_version == version + 1  # it left the routing set
    assert len(io.handles) == 2 and len(io.pending("ready")) == 1  # replaced
    assert state.status == "UPDATING"
    ready_all(io)
    state.step(t)
    assert state.status == "HEALTHY" and len(state.running()) == 1


def test_an_actor_death_in_a_health_check_replaces_at_once() -> None:
    died = actors.ActorDiedError("actor is dead")
    state, io = running_state(2, health_check_period_s=10.0)
    state.step(10.0)
    checks = io.pending("check_health")
    assert len(checks) == 2
    checks[0].fail(died)
    checks[1].succeed(None)
    assert state.step(10.1) is True
    assert io.kills == [checks[0].handle]
    assert len(state.running()) == 1
    assert len(io.pending("ready")) == 1
    assert "ActorDiedError" in state.message


def test_no_answer_within_the_health_check_timeout_replaces_the_replica() -> None:
    state, io = running_state(1, health_check_period_s=10.0, health_check_timeout_s=30.0)
    state.step(10.0)
    (check,) = io.pending("check_health")
    state.step(39.0)
    assert io.kills == [], "killed before health_check_timeout_s"
    assert state.step(41.0) is True
    assert io.kills == [check.handle]
    assert len(io.pending("ready")) == 1
    assert "30" in state.message


def test_a_replica_whose_health_check_goes_unanswered_past_the_period_makes_the_deployment_unhealthy() -> None:
    state, io = running_state(2, health_check_period_s=1.0, health_check_timeout_s=4.0)
    state.step(1.0)
    frozen, answering = io.pending("check_health")
    answering.succeed(None)
    state.step(1.9)
    assert state.status == "HEALTHY" and state.message == ""  # unanswered for 0.9 s: within the period
    state.step(2.6)
    frozen_id = next(r.replica_id for r in state.replicas.values() if r.handle is frozen.handle)
    assert state.status == "UNHEALTHY"
    assert state.message == (f"replica {frozen_id} is unresponsive: its health check has gone unanswered for 2 s; "
                             "it is replaced at health_check_timeout_s=4 s")
    assert len(state.running()) == 2 and io.kills == []  # still routed (routers set it aside), not replaced yet
    frozen.succeed(None)  # it answers after all
    state.step(2.7)
    assert state.status == "HEALTHY" and state.message == ""
    assert state.quiet_until() is not None  # settled again


def test_an_unresponsive_replica_shows_0_in_replica_healthy_until_it_answers() -> None:
    from serve._control.controller import _metric_rows

    state, io = running_state(2, health_check_period_s=1.0, health_check_timeout_s=4.0)
    deployments = {DeploymentId(state.target.app, state.target.name): state}

    def healthy(now: float) -> dict[str, float]:
        return {labels[1]: value for labels, value in _metric_rows(deployments, now)["serve_deployment_replica_healthy"]}

    state.step(1.0)
    frozen, answering = io.pending("check_health")
    answering.succeed(None)
    frozen_id = next(str(r.replica_id) for r in state.replicas.values() if r.handle is frozen.handle)
    state.step(1.9)
    assert sorted(healthy(1.9).values()) == [1.0, 1.0]  # unanswered for 0.9 s: within the period
    state.step(2.6)
    assert state.status == "UNHEALTHY"
    rows = healthy(2.6)
    assert rows[frozen_id] == 0.0 and sorted(rows.values()) == [0.0, 1.0]
    frozen.succeed(None)  # it answers after all
    state.step(2.7)
    assert sorted(healthy(2.7).values()) == [1.0, 1.0]


@pytest.mark.parametrize(("period", "timeout", "bound"), [(0.2, 2.0, 1.0), (10.0, 30.0, 10.0), (10.0, 5.0, 2.5)])
def test_unresponsive_means_unanswered_past_the_period_but_at_least_1_s_and_at_most_half_the_timeout(
        period: float, timeout: float, bound: float) -> None:
    state, io = running_state(1, health_check_period_s=period, health_check_timeout_s=timeout)
    state.step(period)
    assert len(io.pending("check_health")) == 1
    state.step(period + bound - 0.05)
    assert state.status == "HEALTHY"
    state.step(period + bound + 0.05)
    assert state.status == "UNHEALTHY" and "unresponsive" in state.message and io.kills == []


def test_an_unresponsive_replica_is_replaced_at_the_timeout_and_the_deployment_heals() -> None:
    state, io = running_state(2, health_check_period_s=1.0, health_check_timeout_s=4.0)
    state.step(1.0)
    frozen, answering = io.pending("check_health")
    answering.succeed(None)
    state.step(3.0)
    assert state.status == "UNHEALTHY" and "unresponsive" in state.message
    state.step(5.1)  # past health_check_timeout_s: replaced, and the deployment keeps converging
    assert io.kills == [frozen.handle] and len(io.pending("ready")) == 1
    assert state.status == "UPDATING" and "did not answer its health check within 4" in state.message
    ready_all(io)
    state.step(5.2)
    assert state.status == "HEALTHY" and len(state.running()) == 2 and state.message == ""


def test_starting_and_stopping_replicas_get_no_health_checks() -> None:
    cfg: dict[str, Any] = dict(health_check_period_s=1.0, graceful_shutdown_timeout_s=100.0)
    state, io = running_state(2, **cfg)
    state.update(make_target("v1", 1, **cfg))
    state.step(0.5)  # one STOPPING
    (stopping,) = [p.handle for p in io.calls_of("prepare_for_shutdown")]
    state.update(make_target("v1", 2, **cfg))
    state.step(0.6)  # one STARTING
    for t in (1.0, 2.0, 3.0):
        state.step(t)
        for p in io.pending("check_health"):
            p.succeed(None)
    checked = {p.handle for p in io.calls_of("check_health")}
    assert stopping not in checked
    assert checked == {r.handle for r in state.running()}


# ---------------------------------------------------------------------------------------
# Rolling update
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "seed"), [(5, 0), (5, 1), (5, 2), (5, 3), (5, 4), (10, 0), (10, 1), (1, 0)])
def test_rolling_update_keeps_capacity_and_bounds_the_surge(n: int, seed: int) -> None:
    cfg: dict[str, Any] = dict(health_check_period_s=1e6)
    state, io = running_state(n, **cfg)
    old = set(io.handles)
    surge = max(1, math.ceil(0.2 * n))
    rng = random.Random(seed)

    assert state.update(make_target("v2", n, **cfg)) is True
    state.step(1.0)
    assert io.kills == [] and io.calls_of("prepare_for_shutdown") == [], "an old replica stopped first"
    assert len(io.started("v2")) == surge

    def check(when: str) -> None:
        assert len(state.running()) >= n, f"{when}: RUNNING dropped to {len(state.running())} < {n}"
        assert states_by_version(state, "v2", "STARTING") <= surge, f"{when}: more than {surge} new ones starting"
        assert sum(1 for h in io.started("v2") if h.killed) == 0, f"{when}: a new replica was killed"

    now = 1.0
    for i in range(500):
        pending = [p for p in io.calls if not p.done() and p.method in ("ready", "prepare_for_shutdown")]
        if not pending and state.status == "HEALTHY":
            break
        for p in rng.sample(pending, min(len(pending), rng.choice([0, 1, 1, 2, 3]))):
            p.succeed(None)
        now += 0.01
        state.step(now)
        check(f"step {i}")
    else:
        pytest.fail(f"the rolling update did not finish: {state.counts()}, status {state.status}")

    assert state.status == "HEALTHY"
    assert len(state.replicas) == n
    assert all(r.version == "v2" and r.state == "RUNNING" for r in state.replicas.values())
    assert len(io.started("v2")) == n, "more new replicas started than needed"
    assert set(io.kills) == old
    first_new = next(i for i, (kind, h, _) in enumerate(io.events) if kind == "start" and h.version == "v2")
    for handle in old:  # each old replica drained, then killed, after the first new one started
        drained = io.events.index(("call", handle, "prepare_for_shutdown"))
        killed = io.events.index(("kill", handle, ""))
        assert first_new < drained < killed


def test_a_new_version_that_cannot_start_never_takes_capacity_from_the_old_one() -> None:
    n = 5
    state, io = running_state(n, health_check_period_s=1e6)
    old = {r.handle for r in state.running()}
    state.update(make_target("v2", n, health_check_period_s=1e6))
    state.step(1.0)
    for i in range(4 * MAX_START_FAILURES):
        pending = io.pending("ready")
        assert 1 <= len(pending) <= max(1, math.ceil(0.2 * n))
        for p in pending:
            p.fail(RuntimeError("v2 is broken"))
        state.step(2.0 + i)
        state.step(max(2.0 + i, state.next_start_at))  # past the start back-off
    assert {r.handle for r in state.running()} == old
    assert io.calls_of("prepare_for_shutdown") == [] and not any(h in old for h in io.kills)
    assert state.status == "UPDATING"  # old ones still serve: not UNHEALTHY
    assert "v2 is broken" in state.message


# ---------------------------------------------------------------------------------------
# user_config
# ---------------------------------------------------------------------------------------


def test_user_config_change_reconfigures_running_replicas_once_without_restarts() -> None:
    state, io = running_state(3, user_config={"x": 1})
    assert io.calls_of("reconfigure") == [], "the start applies user_config; no reconfigure needed"
    version = state.routing_version

    assert state.update(make_target("v1", 3, user_config={"x": 2})) is True
    state.step(1.0)
    calls = io.calls_of("reconfigure")
    assert sorted(p.handle.replica_id for p in calls) == sorted(r.replica_id for r in state.running())
    assert all(p.args == ({"x": 2},) for p in calls)
    for t in (1.1, 1.2):
        state.step(t)
    assert len(io.calls_of("reconfigure")) == 3, "reconfigure sent again while in flight"
    for p in calls:
        p.succeed(None)
    for t in (1.3, 1.4):
        state.step(t)
    assert len(io.calls_of("reconfigure")) == 3, "reconfigure sent again after it answered"

    state.update(make_target("v1", 3, user_config={"x": 3}))
    state.step(2.0)
    assert len(io.calls_of("reconfigure")) == 6
    assert all(p.args == ({"x": 3},) for p in io.calls_of("reconfigure")[3:])
    assert len(io.handles) == 3 and io.kills == []
    assert state.routing_version == version and state.status == "UPDATING", "HEALTHY before the config applied"
    for p in io.calls_of("reconfigure")[3:]:
        p.succeed(None)
    state.step(2.1)
    assert state.status == "HEALTHY"


def test_a_second_user_config_change_during_a_reconfigure_is_sent_after_it() -> None:
    state, io = running_state(1, user_config=1)
    state.update(make_target("v1", 1, user_config=2))
    state.step(1.0)
    (first,) = io.calls_of("reconfigure")
    state.update(make_target("v1", 1, user_config=3))
    state.step(1.1)
    assert io.calls_of("reconfigure") == [first]
    first.succeed(None)
    for t in (1.2, 1.3, 1.4):
        state.step(t)
    assert [p.args for p in io.calls_of("reconfigure")] == [(2,), (3,)]


def test_a_failed_reconfigure_is_reported_in_the_message() -> None:
    state, io = running_state(1, user_config=1)
    state.update(make_target("v1", 1, user_config=2))
    state.step(1.0)
    io.pending("reconfigure")[0].fail(KeyError("no such key"))
    state.step(1.1)
    assert "reconfigure failed" in state.message and "no such key" in state.message


def test_a_replica_starting_during_a_user_config_change_ends_up_with_the_new_config() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1, user_config={"x": 1}), io)
    state.step(0.0)
    (starting,) = io.handles
    assert starting.target.config.user_config == {"x": 1}  # what its constructor applies

    state.update(make_target("v1", 1, user_config={"x": 2}))
    state.step(0.5)
    ready_all(io)
    for t in (1.0, 1.1, 1.2):
        state.step(t)
        ready_all(io)
    (r,) = state.running()
    reconfigured = [p.args for p in io.calls_of("reconfigure", r.handle)]
    constructed_with = r.handle.target.config.user_config
    assert constructed_with == {"x": 2} or reconfigured[-1:] == [({"x": 2},)], (
        f"replica runs user_config {constructed_with} (reconfigure calls: {reconfigured})")


# ---------------------------------------------------------------------------------------
# Delete
# ---------------------------------------------------------------------------------------


def test_delete_drains_everything_then_finishes() -> None:
    state, io = running_state(2)
    state.update(make_target("v1", 3))
    state.step(1.0)  # one STARTING
    state.delete()
    assert state.status == "DELETING" and state.desired == 0 and not state.finished

    assert state.step(2.0) is True
    assert state.running() == [] and state.counts() == {"STOPPING": 2}
    assert len(io.kills) == 1  # the STARTING one, at once
    shutdowns = io.calls_of("prepare_for_shutdown")
    assert len(shutdowns) == 2
    assert not state.finished

    shutdowns[0].succeed(None)
    state.step(2.1)
    assert not state.finished
    shutdowns[1].succeed(None)
    state.step(2.2)
    assert state.finished and state.replicas == {}
    assert io.alive() == [] and state.status == "DELETING"
    for t in (3.0, 100.0):
        state.step(t)
    assert len(io.handles) == 3, "a deleted deployment started replicas"


def test_delete_of_an_unhealthy_deployment_finishes() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1), io)
    state.step(0.0)
    for i in range(MAX_START_FAILURES):
        fail_next_start(state, io, 0.1 * (i + 1))
    state.delete()
    state.step(5.0)
    assert state.finished and state.status == "DELETING"


def test_redeploying_a_deleting_deployment_revives_it() -> None:
    state, io = running_state(1)
    state.delete()
    state.step(1.0)
    assert state.update(state.target) is True
    assert not state.deleting and state.desired == 1
    state.step(2.0)
    assert len(io.pending("ready")) == 1 and not state.finished


# ---------------------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------------------

AUTOSCALING: dict[str, Any] = dict(
    min_replicas=1, max_replicas=5, target_ongoing_requests=2, upscale_delay_s=0.0,
    downscale_delay_s=1.0, look_back_period_s=1.0, metrics_interval_s=0.1,
)


def test_autoscaling_desired_follows_the_recorded_load() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 1, autoscaling_config=AUTOSCALING, health_check_period_s=1e6), io)
    assert state.desired == 1
    state.step(0.0)
    assert len(io.handles) == 1

    t = 0.5
    state.record_load(t, "router-1", 6.0)  # 6 in flight / 2 per replica = 3 replicas
    state.step(t)
    assert state.desired == 3
    assert len(io.handles) == 3
    while t < 2.0:  # the load holds
        t = round(t + 0.1, 3)
        state.record_load(t, "router-1", 6.0)
        state.step(t)
        ready_all(io)
        assert state.desired == 3, f"t={t}"
    assert len(state.running()) == 3

    state.record_load(t, "router-2", 100.0)  # clamped to max_replicas
    state.step(t)
    assert state.desired == 5
    last_report = t
    history: list[tuple[float, int]] = []
    while t < 6.0:  # no more reports: the load ages out, then the downscale delay passes
        t = round(t + 0.1, 3)
        state.step(t)
        ready_all(io)
        for p in io.pending("prepare_for_shutdown"):
            p.succeed(None)
        history.append((t, state.desired))
    assert all(d == 5 for when, d in history if when < last_report + 1.0), history
    assert history[-1][1] == 1
    assert all(d >= 1 for _, d in history)
    assert state.counts() == {"RUNNING": 1} and state.status == "HEALTHY"


def test_record_load_without_autoscaling_changes_nothing() -> None:
    state, io = running_state(2)
    state.record_load(1.0, "router", 1000.0)
    state.step(1.0)
    assert state.desired == 2 and len(io.handles) == 2


# ---------------------------------------------------------------------------------------
# A restarted controller taking over running replicas
# ---------------------------------------------------------------------------------------


def test_adopted_replicas_stay_routed_and_are_checked_at_once() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 2), io, version_base=1_000)
    for i in range(2):  # running since an earlier controller: the fake IO knows them already
        handle = FakeHandle(f"d#{i}", state.target)
        io.handles.append(handle)
        state.adopt(handle.replica_id, handle, "v1", None, 5.0, "RUNNING")
    assert state.step(5.0) is True, "the adopted replicas were not routed at the first step"
    assert state.routing_version == 1_001
    assert sorted(r.replica_id for r in state.running()) == ["d#0", "d#1"]
    assert len(io.handles) == 2, "replicas were started beside the adopted ones"
    checks = io.pending("check_health")
    assert len(checks) == 2, "adopted replicas were not health-checked at once"
    assert state.status == "HEALTHY"

    checks[0].fail(actors.ActorDiedError("actor is dead"))  # one died while the controller was away
    state.step(5.1)
    assert len(state.running()) == 1 and len(io.pending("ready")) == 1  # replaced


def test_adopted_replicas_keep_the_state_they_had() -> None:
    io = FakeIO()
    state = DeploymentState(make_target("v1", 2, health_check_period_s=1e6), io)
    handles = {}
    for name, was in (("d#run", "RUNNING"), ("d#start", "STARTING"), ("d#stop", "STOPPING")):
        handles[was] = FakeHandle(name, state.target)
        io.handles.append(handles[was])
        state.adopt(name, handles[was], "v1", None, 5.0, was)
    state.step(5.0)
    # only the one that was serving is routed; the starting one is asked `ready` again
    assert [r.replica_id for r in state.running()] == ["d#run"]
    assert [p.handle for p in io.pending("ready")] == [handles["STARTING"]]
    # the stopping one drains again, out of the routing set, and is killed once drained
    (drain,) = io.pending("prepare_for_shutdown")
    assert drain.handle is handles["STOPPING"]
    drain.succeed(None)
    state.step(5.1)
    assert handles["STOPPING"] in io.kills and "d#stop" not in state.replicas
    io.pending("ready")[0].succeed({})
    state.step(5.2)
    assert sorted(r.replica_id for r in state.running()) == ["d#run", "d#start"]
    assert state.status == "HEALTHY" and len(io.handles) == 3  # nothing new started
