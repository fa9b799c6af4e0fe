"""Exceptions of the serving layer; each says who raises it and when."""

from __future__ import annotations

from collections.abc import Iterable

from actors import ActorsError

__all__ = ["ApplicationNotFoundError", "BackPressureError", "ConfigError", "ConflictError", "DeployTimeoutError",
           "DeploymentNotFoundError", "DeploymentTooLargeError", "DeploymentUnavailableError", "DeploymentUnhealthyError",
           "GraphWithoutIngressError", "MethodNotFoundError", "OptionTypeError", "RayServeException", "ServeError", "ServeNotRunningError"]


class ServeError(ActorsError):
    """Base class of errors raised by zeroserve's serving layer."""


RayServeException = ServeError  # the name Ray Serve 1.x programs catch


class BackPressureError(ServeError):
    """Raised by a handle call (HTTP 503 at the proxy) when every replica is at
    `max_ongoing_requests` and the caller's queue already holds `max_queued_requests`.

    Built as Ray's, `BackPressureError(num_queued_requests=N, max_queued_requests=M)`, its
    message is Ray's plain sentence (also the body of the proxy's 503); both numbers are
    attributes. A positional message is accepted too."""

    def __init__(self, *args: object, num_queued_requests: int | None = None,
                 max_queued_requests: int | None = None) -> None:
        if not args and num_queued_requests is not None and max_queued_requests is not None:
            args = (f"Request dropped due to backpressure (num_queued_requests={num_queued_requests}, "
                    f"max_queued_requests={max_queued_requests}).",)
        super().__init__(*args)
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests


class DeploymentUnavailableError(ServeError):
    """Raised by a handle call (HTTP 503 at the proxy) to a deployment that runs no replica
    and cannot start one (UNHEALTHY: e.g. scaled to zero and its constructor fails); calls
    waiting for a replica fail with it too, rather than wait forever. The message says why."""


class DeploymentUnhealthyError(ServeError):
    """Raised by `deploy()` / `serve.run()` when a deployment cannot become healthy: its
    constructor keeps failing (the last error is in the message and in `serve.status()`)."""


class ConflictError(ServeError, ValueError):
    """Raised by `serve.run`, `Deployment.deploy()` and `zeroserve serve deploy/run` when the
    new deployments would claim a route prefix or a deployment name that another holds;
    the message names both, and nothing was changed."""


class DeploymentTooLargeError(ServeError, ValueError):
    """Raised by `serve.run`, `Deployment.deploy()` and `zeroserve serve deploy/run` when a
    deployment's code, bind arguments and `user_config` are too large for the head to keep
    (`$ZEROSERVE_HEAD_MAX_BLOB_BYTES`, 16 MiB by default): the controller could not save its
    record, so it would not survive a controller restart. The message names the deployment,
    its size and the cap; nothing was changed. Load large data in the constructor instead."""


class DeployTimeoutError(ServeError, TimeoutError):
    """Raised by `serve.run()` / `deploy()` when a deployment is not ready within the deploy
    deadline (`timeout_s=`, a config file's `deploy_timeout_s`, `$ZEROSERVE_DEPLOY_TIMEOUT_S`,
    300 s by default); the message names each deployment not ready and why (waiting for
    resources, its constructor still running, retrying after an error). What was deployed
    keeps starting: the deadline only ends the wait."""


class ServeNotRunningError(ServeError, RuntimeError):
    """Raised by a handle call (or a lookup) that needs the controller when Serve is not
    running on the cluster: `serve.start()` or `serve.run()` first."""


class ConfigError(ServeError, ValueError):
    """Raised by the config-file loader (`zeroserve serve run/deploy CONFIG.yaml`) before
    anything is deployed; each line of the message names a field path such as
    `applications[0].deployments[1].num_replicas` and what is wrong with it."""


class OptionTypeError(TypeError, ValueError):
    """Raised at the call that gave the options (`@serve.deployment(...)`, `.options(...)`,
    `serve.start(http_options=...)`, `serve.HTTPOptions(...)`, `AutoscalingConfig(...)`) when an
    option has the wrong type or is unknown; the message names it and says what to give. A
    TypeError, as Ray's; also a ValueError, which is what these calls raised for it before.
    (An option of the right type but out of range raises a plain ValueError.)"""


class _NotFound(ServeError, KeyError):
    """A lookup that found nothing: a KeyError (as Ray's) printed as its plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ApplicationNotFoundError(_NotFound):
    """Raised by `serve.get_app_handle(name)` when no application of that name runs (or it
    has no ingress deployment: one made only of 1.x `Deployment.deploy()`s); the message
    lists the applications there are."""


class DeploymentNotFoundError(_NotFound):
    """Raised by `serve.get_deployment_handle(name, app_name)` and 1.x `serve.get_handle(name)`
    when there is no such deployment (in that application); the message lists what there is."""


class MethodNotFoundError(ServeError, AttributeError):
    """Raised by a handle call (at once, before the call is routed, when the caller knows
    the deployment's methods; otherwise by the replica) that names a method the deployment
    does not have, or a private one; the message lists the methods it has."""

    @classmethod
    def of(cls, deployment: str, method: str, methods: Iterable[str]) -> "MethodNotFoundError":
        what = "is private" if method.startswith("_") and method != "__call__" else "does not exist"
        return cls(f"tried to call method {method!r} of deployment {deployment!r}, which {what}; "
                   f"its methods: {', '.join(methods) or 'none'}")


class GraphWithoutIngressError(ServeError, ValueError, TypeError):
    """Raised by `serve.run` (and a config file's import path) given a deployment graph node
    (`model.method.bind(inp)`, `node.bind(inp)`) instead of an application with an ingress:
    wrap it, `serve.run(DAGDriver.bind(graph))`. A ValueError, as Ray's; also a TypeError,
    which is what it raised before."""
