"""This process's client of Serve: the controller, one router per deployment, and the
driver-side calls that deploy, delete and wait.

One `ServeClient` per runtime (`ServeClient.of(rt)`), shared by handles, the HTTP proxy
actor, the driver API and `Deployment`. Two sides:
- on the runtime's loop (async): `controller()` finds the controller by name once and
  caches it; `router(name)` makes the deployment's `Router` once; `start_call` starts a
  handle call there (calls from other threads arrive through one inbox, per burst);
- from a driver's thread (blocking): `call(method, ...)` calls the controller; `deploy`,
  `delete` and the waits watch the controller's status by long poll, printing progress.

Invariant: nothing here starts Serve; `serve._api.startup` does (it needs the controller
class, which lives above this layer).
"""

from __future__ import annotations

import os
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
from ..exceptions import DeploymentUnhealthyError, ServeNotRunningError
from ..messages import DeploymentId, DeploymentStatus, DeploymentTarget
from .router import Router

__all__ = ["STATUS_KEY", "ServeClient", "deploy_timeout_s", "deployments_in", "say"]

STATUS_KEY = "status"  # the controller's long-poll key of its status summary
_CALL_TIMEOUT_S = 60.0
_HOLD_S = 5.0  # a waiting driver hears from the controller at least this often
_lock = threading.Lock()


def deploy_timeout_s() -> float:
    """How long deploys wait for their replicas by default: `$ZEROSERVE_DEPLOY_TIMEOUT_S` (300)."""
    return float(os.environ.get("ZEROSERVE_DEPLOY_TIMEOUT_S", "300"))


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
                router = self._routers[deployment] = Router(deployment, controller)
        return router

    def submit(self, fn: Callable[..., None], args: tuple) -> None:
        """Run `fn(*args)` on the runtime's loop, soon (from any thread; one wake-up per burst)."""
        self._inbox.put((fn, args))

    @staticmethod
    def _start_calls(items: Iterable[tuple[Callable[..., None], tuple]]) -> None:
        for fn, args in items:
            fn(*args)

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
        DeploymentUnhealthyError (one cannot start) or TimeoutError."""
        timeout_s = deploy_timeout_s() if timeout_s is None else timeout_s
        progress = _Progress()

        def healthy(st: dict[str, Any]) -> bool:
            deps = {d: s for d, s in deployments_in(st).items() if d in ids}
            progress.line("; ".join(f"{d.name} {s['replicas'].get('RUNNING', 0)}/{s['target_replicas']} running "
                                    f"({s['status']})" for d, s in sorted(deps.items())))
            unhealthy = {d: s["message"] for d, s in deps.items() if s["status"] == DeploymentStatus.UNHEALTHY}
            if unhealthy:
                raise DeploymentUnhealthyError("; ".join(f"deployment {d.name} is unhealthy: {m}"
                                                         for d, m in unhealthy.items()))
            return len(deps) == len(ids) and all(s["status"] == DeploymentStatus.HEALTHY for s in deps.values())

        if not self.watch_status(healthy, timeout_s):
            raise TimeoutError(f"deployments not ready after {timeout_s:.0f}s: {progress.last} "
                               "(busy resources? see `zeroserve status`)")

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


class _Progress:
    """Progress lines: printed when they change."""

    def __init__(self) -> None:
        self.last = ""

    def line(self, text: str) -> None:
        if text and text != self.last:
            say(text)
        self.last = text


