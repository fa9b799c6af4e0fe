"""This process's client of Serve: the controller, one router per deployment, and the
driver-side calls that deploy, delete and wait.

One `ServeClient` per runtime (`ServeClient.of(rt)`), shared by handles, the HTTP proxy
actor, the driver API and `Deployment`. Two sides:
- on the runtime's loop (async): `controller()` finds the controller by name once and
  caches it; `router(name)` makes the deployment's `Router` once; `start_call` starts a
  handle call there (calls from other threads arrive through one inbox, per burst);
- from a driver's thread (blocking): `call(method, ...)` calls the controller; `deploy`,
  `delete` and the waits watch the controller's status by long poll, printing progress:
  a line when something changes and at least every PROGRESS_S while nothing does, with the
  reason each deployment is not ready (see `_control.status.progress`).

Invariant: nothing here starts Serve; `serve._api.startup` does (it needs the controller
class, which lives above this layer).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import actors
from actors import ActorHandle
from actors.messages import ActorState
from actors.system import LoopInbox, Runtime, Update, current_runtime, runtime_or_init

from .._names import CONTROLLER_NAME, SERVE_NAMESPACE
from ..exceptions import DeploymentUnhealthyError, DeployTimeoutError, ServeNotRunningError
from ..messages import DeploymentId, DeploymentStatus, DeploymentTarget
from . import tracing
from .router import Router

__all__ = ["PROGRESS_S", "Progress", "STATUS_KEY", "ServeClient", "deploy_timeout_s", "deployments_in", "describe",
           "not_ready", "say"]

STATUS_KEY = "status"  # the controller's long-poll key of its status summary
_CALL_TIMEOUT_S = 60.0
_HOLD_S = 4.0  # a waiting driver hears from the controller at least this often
PROGRESS_S = 4.0  # a waiting driver prints progress at least this often
_lock = threading.Lock()
log = logging.getLogger(__name__)


def deploy_timeout_s() -> float:
    """How long deploys wait for their replicas by default: `$ZEROSERVE_DEPLOY_TIMEOUT_S` (300)."""
    value = os.environ.get("ZEROSERVE_DEPLOY_TIMEOUT_S", "300")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"ZEROSERVE_DEPLOY_TIMEOUT_S must be a number of seconds, got {value!r}") from None


def describe(name: str, d: dict[str, Any]) -> str:
    """A deployment's progress: `Model 1/2 running (UPDATING): Model#ab12cd constructor running for 12 s`."""
    line = f"{name} {d['replicas'].get('RUNNING', 0)}/{d['target_replicas']} running ({d['status']})"
    return f"{line}: {d['progress']}" if d.get("progress") and d["status"] != DeploymentStatus.HEALTHY else line


def not_ready(deps: dict[DeploymentId, dict[str, Any]], ids: list[DeploymentId], timeout_s: float) -> DeployTimeoutError:
    """The error of a deploy whose deadline passed: each deployment not ready, and why."""
    late = [describe(d.name, deps[d]) if d in deps else f"{d.name} not created yet" for d in ids
            if d not in deps or deps[d]["status"] != DeploymentStatus.HEALTHY]
    return DeployTimeoutError(f"not ready after {timeout_s:g} s (the deploy deadline: timeout_s=, a config file's "
                              f"deploy_timeout_s or $ZEROSERVE_DEPLOY_TIMEOUT_S): " + "; ".join(late) +
                              " (see `zeroserve serve status`; it keeps starting meanwhile)")


def say(text: str) -> None:
    """A progress line for the user (stderr; silenced by ZEROSERVE_QUIET=1)."""
    if os.environ.get("ZEROSERVE_QUIET") != "1":
        print(f"serve: {text}", file=sys.stderr, flush=True)


class ServeClient:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._controller: ActorHandle | None = None
        self._routers: dict[DeploymentId, Router] = {}
        self._inbox = LoopInbox(rt.loop, self._start_calls)
        self.closed = False
        # The `handle` label of this process's calls (one per process), and its actor's id.
        self.handle_id = os.urandom(3).hex()
        self.actor_id = rt.actor_id.hex if rt.actor_id is not None else ""
        tracing.configure()  # on if $ZEROSERVE_TRACING_EXPORTER says so

    @classmethod
    def of(cls, rt: Runtime) -> "ServeClient":
        client = rt.attached(cls)
        if client is None:
            with _lock:  # handles are used from any thread
                client = rt.attachment(cls, lambda: cls(rt))
        return client

    @classmethod
    def current(cls) -> "ServeClient":
        """The client of this process's runtime (connecting the driver first if needed)."""
        rt = current_runtime()
        last = _last
        if last is not None and last.rt is rt and not last.closed:  # the hot path of every handle call
            return last
        return _remember(cls.of(rt if rt is not None else runtime_or_init()))

    # -- on the runtime's loop -------------------------------------------------------------
    async def controller(self) -> ActorHandle:
        """The controller's handle; ServeNotRunningError if Serve is not running."""
        if self._controller is None:
            info = await self.rt.head.get_named_actor(CONTROLLER_NAME, SERVE_NAMESPACE)
            if info is None or info.state is ActorState.DEAD:
                raise ServeNotRunningError("Serve is not running on this cluster: call serve.start() or "
                                           "serve.run() first")
            self.rt.directory.update(info)
            self._controller = ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)
        return self._controller

    def router_now(self, deployment: DeploymentId) -> Router | None:
        return self._routers.get(deployment)

    async def router(self, deployment: DeploymentId) -> Router:
        router = self._routers.get(deployment)
        if router is None:
            controller = await self.controller()
            router = self._routers.get(deployment)  # another call may have made it meanwhile
            if router is None:
                router = self._routers[deployment] = Router(deployment, controller, handle_id=self.handle_id,
                                                            actor_id=self.actor_id)
        return router

    def submit(self, fn: Callable[..., None], args: tuple) -> None:
        """Run `fn(*args)` on the runtime's loop, soon (from any thread; one wake-up per burst)."""
        self._inbox.put((fn, args))

    @staticmethod
    def _start_calls(items: Iterable[tuple[Callable[..., None], tuple]]) -> None:
        for fn, args in items:
            try:  # one item's failure must not drop the rest of the burst (each fails its own call)
                fn(*args)
            except Exception:
                log.exception("starting a call failed")

    # -- from a driver's thread --------------------------------------------------------------
    def controller_or_none(self) -> ActorHandle | None:
        try:
            return self.rt.run_threadsafe(self.controller)
        except ServeNotRunningError:
            return None

    def call(self, method: str, *args: Any, timeout: float = _CALL_TIMEOUT_S) -> Any:
        """Call the controller and wait for the answer (ServeNotRunningError without one)."""
        controller = self.rt.run_threadsafe(self.controller)
        try:
            return actors.get(getattr(controller, method).remote(*args), timeout=timeout)
        except actors.ActorDiedError:
            self._controller = None
            fresh = self.controller_or_none()
            if fresh is None or fresh.actor_id == controller.actor_id:
                raise
            # Serve was restarted since this process cached its controller: ask the new one.
            return actors.get(getattr(fresh, method).remote(*args), timeout=timeout)

    def forget_controller(self) -> None:
        self._controller = None

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def targets(self) -> dict[DeploymentId, DeploymentTarget]:
        return self.call("targets")

    def watch_status(self, until: Callable[[dict[str, Any]], bool], timeout_s: float,
                     stop: threading.Event | None = None) -> bool:
        """Long-poll the controller's status until `until(status)` is true (True), the
        deadline passes (False) or `stop` is set (False). `until` may raise to end the wait."""
        deadline = time.monotonic() + timeout_s
        version = -1
        while True:
            hold = max(0.0, min(_HOLD_S, deadline - time.monotonic()))
            update: Update = self.call("listen", STATUS_KEY, version, hold, timeout=hold + _CALL_TIMEOUT_S)
            version = update.version
            if update.value is not None and until(update.value):
                return True
            if time.monotonic() >= deadline or (stop is not None and stop.is_set()):
                return False

    def deploy(self, targets: list[DeploymentTarget], wait: bool = True,
               timeout_s: float | None = None) -> dict[DeploymentId, bool]:
        """Add or update deployments (1.x); returns {deployment: changed}. `wait`: until all are HEALTHY."""
        return self._deployed(self.call("deploy", targets), targets, wait, timeout_s)

    def deploy_apps(self, apps: dict[str, list[DeploymentTarget]], exclusive: bool = False, wait: bool = True,
                    timeout_s: float | None = None) -> dict[DeploymentId, bool]:
        """Deploy whole applications (see the controller's `deploy_apps`); returns {deployment: changed}."""
        targets = [t for ts in apps.values() for t in ts]
        return self._deployed(self.call("deploy_apps", apps, exclusive), targets, wait, timeout_s)

    def _deployed(self, changed: dict[DeploymentId, bool], targets: list[DeploymentTarget], wait: bool,
                  timeout_s: float | None) -> dict[DeploymentId, bool]:
        if wait:
            ids = [t.id for t in targets]
            if not any(changed.values()):
                say(f"{', '.join(t.name for t in targets)}: unchanged (same version and config), nothing to do")
            self.wait_healthy(ids, timeout_s)
        return changed

    def wait_healthy(self, ids: list[DeploymentId], timeout_s: float | None = None) -> None:
        """Until every deployment of `ids` is HEALTHY, printing progress; raises
        DeploymentUnhealthyError (one cannot start) or DeployTimeoutError."""
        timeout_s = deploy_timeout_s() if timeout_s is None else timeout_s
        progress = Progress(say)
        seen: dict[DeploymentId, dict[str, Any]] = {}

        def healthy(st: dict[str, Any]) -> bool:
            deps = {d: s for d, s in deployments_in(st).items() if d in ids}
            seen.clear()
            seen.update(deps)
            progress.line("; ".join(describe(d.name, s) for d, s in sorted(deps.items())))
            unhealthy = {d: s["message"] for d, s in deps.items() if s["status"] == DeploymentStatus.UNHEALTHY}
            if unhealthy:
                raise DeploymentUnhealthyError("; ".join(f"deployment {d.name} is unhealthy: {m}"
                                                         for d, m in unhealthy.items()))
            return len(deps) == len(ids) and all(s["status"] == DeploymentStatus.HEALTHY for s in deps.values())

        if not self.watch_status(healthy, timeout_s):
            raise not_ready(seen, ids, timeout_s)

    def delete(self, ids: list[DeploymentId], wait: bool = True, timeout_s: float = 60.0) -> None:
        self.call("delete", ids)
        if wait:
            self.wait_deleted(ids, timeout_s)

    def wait_deleted(self, ids: list[DeploymentId], timeout_s: float = 60.0) -> bool:
        def gone(st: dict[str, Any]) -> bool:
            return not set(deployments_in(st)).intersection(ids)

        return self.watch_status(gone, timeout_s)

    def delete_app(self, app: str, wait: bool = True) -> list[DeploymentId]:
        """Delete an application's deployments; returns them ([] if no such app)."""
        ids = self.call("delete_app", app)
        if ids and wait:
            self.wait_deleted(ids)
        return ids

    # -- life --------------------------------------------------------------------------------
    def close(self) -> None:
        """Forget the controller and close the routers (Serve was shut down)."""
        if self.rt.attached(ServeClient) is self:
            self.rt.detach(ServeClient)
        routers, self._routers = list(self._routers.values()), {}
        for router in routers:
            self.rt.loop.call_soon_threadsafe(router.close)
        self._controller = None
        self.closed = True


_last: ServeClient | None = None  # the client `current()` found last


def _remember(client: ServeClient) -> ServeClient:
    global _last
    _last = client
    return client


def deployments_in(status: dict[str, Any]) -> dict[DeploymentId, dict[str, Any]]:
    """The deployments of a status summary, by id."""
    return {DeploymentId(app, name): d for app, a in status["applications"].items()
            for name, d in a["deployments"].items()}


class Progress:
    """Progress lines: printed when they change (other than in their seconds), and at least
    every PROGRESS_S while they do not."""

    def __init__(self, out: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.clock = clock
        self.last = ""
        self._shape = ""
        self._at = float("-inf")

    def line(self, text: str) -> None:
        shape = _SECONDS.sub("N s", text)
        now = self.clock()
        if text and (shape != self._shape or now - self._at >= PROGRESS_S):
            self.out(text)
            self._shape, self._at = shape, now
        self.last = text


_SECONDS = re.compile(r"\b\d+ s\b")


