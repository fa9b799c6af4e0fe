"""Deployment handles and responses: calling deployments from Python.

`handle.remote(...)` / `handle.method.remote(...)` route through this process's `Router`
for the deployment and return a `DeploymentResponse`: awaitable, `.result(timeout_s)`,
accepted by `actors.get`, and passable as an argument to another handle call (resolved
before that call is routed). Handles are picklable: in another process they find the
controller by name and build their own router.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from actors import ActorHandle, GetTimeoutError, ObjectRef
from actors.system import LoopInbox, copy_state, current_runtime, runtime_or_init

from ._router import Router

__all__ = ["DeploymentHandle", "DeploymentResponse", "RayServeHandle", "RayServeSyncHandle"]


class DeploymentResponse:
    """The result of a handle call, once it is ready."""

    __slots__ = ("_ref",)

    def __init__(self, ref: ObjectRef) -> None:
        self._ref = ref

    def __await__(self):
        return self._ref.__await__()

    def result(self, timeout_s: float | None = None) -> Any:
        try:
            return self._ref.result(timeout_s)
        except GetTimeoutError:
            raise TimeoutError(f"the deployment response was not ready within {timeout_s}s") from None

    def _to_object_ref(self) -> ObjectRef:
        return self._ref

    def __repr__(self) -> str:
        return f"DeploymentResponse({'ready' if self._ref.done() else 'pending'})"


async def _controller(rt: Any) -> ActorHandle:
    from ._controller import CONTROLLER_NAME, SERVE_NAMESPACE

    cached = rt.extensions.get("serve_controller")
    if cached is not None:
        return cached
    info = await rt.call_head("get_named_actor", CONTROLLER_NAME, SERVE_NAMESPACE)
    if info is None:
        raise RuntimeError("Serve is not running on this cluster: call serve.start() or serve.run() first")
    rt.extensions["directory"].update(info)
    handle = ActorHandle(info.actor_id, info.class_name, info.methods, info.async_methods, info)
    rt.extensions["serve_controller"] = handle
    return handle


async def _router(rt: Any, deployment: str) -> Router:
    routers: dict[str, Router] = rt.extensions.setdefault("serve_routers", {})
    router = routers.get(deployment)
    if router is None:
        controller = await _controller(rt)
        router = routers.get(deployment)  # another call may have made it meanwhile
        if router is None:
            router = routers[deployment] = Router(deployment, controller)
    return router


async def _resolve(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    if any(isinstance(a, DeploymentResponse) for a in args):
        args = tuple([(await a) if isinstance(a, DeploymentResponse) else a for a in args])
    if any(isinstance(v, DeploymentResponse) for v in kwargs.values()):
        kwargs = {k: ((await v) if isinstance(v, DeploymentResponse) else v) for k, v in kwargs.items()}
    return args, kwargs


async def _call(rt: Any, deployment: str, method: str, args: tuple, kwargs: dict) -> Any:
    args, kwargs = await _resolve(args, kwargs)
    router = await _router(rt, deployment)
    return await router.call(method, args, kwargs)


class DeploymentHandle:
    """Calls a deployment. `handle.remote(...)` calls `__call__`, `handle.m.remote(...)` calls m."""

    def __init__(self, deployment_name: str, app_name: str = "default", method_name: str = "__call__") -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name

    def __repr__(self) -> str:
        return f"DeploymentHandle(deployment={self.deployment_name!r}, method={self.method_name!r})"

    def __reduce__(self):
        return (DeploymentHandle, (self.deployment_name, self.app_name, self.method_name))

    def options(self, *, method_name: str | None = None, **_ignored: Any) -> "DeploymentHandle":
        return DeploymentHandle(self.deployment_name, self.app_name, method_name or self.method_name)

    def __getattr__(self, name: str) -> "DeploymentHandle":
        if name.startswith("_"):
            raise AttributeError(name)
        return DeploymentHandle(self.deployment_name, self.app_name, name)

    def remote(self, *args: Any, **kwargs: Any) -> DeploymentResponse:
        rt = current_runtime() or runtime_or_init()
        call = (self.deployment_name, self.method_name, args, kwargs)
        if rt.in_loop_thread():
            fut: Any = rt.loop.create_task(_call(rt, *call))
        else:
            fut = concurrent.futures.Future()
            _submitter(rt).put((call, fut))
        return DeploymentResponse(ObjectRef(fut, rt, f"{self.deployment_name}.{self.method_name}"))


def _start_calls(rt: Any, items: Any) -> None:
    for call, fut in items:
        task = rt.loop.create_task(_call(rt, *call))
        task.add_done_callback(lambda t, f=fut: copy_state(t, f))


def _submitter(rt: Any) -> LoopInbox:
    """Handle calls made on other threads, carried into the runtime's loop per burst."""
    inbox = rt.extensions.get("serve_submitter")
    if inbox is None:
        inbox = rt.extensions["serve_submitter"] = LoopInbox(rt.loop, lambda items: _start_calls(rt, items))
    return inbox


RayServeHandle = DeploymentHandle  # Ray Serve 1.x names
RayServeSyncHandle = DeploymentHandle
