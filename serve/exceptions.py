"""Exceptions of the serving layer; each says who raises it and when."""

from __future__ import annotations

from actors import ActorsError

__all__ = ["BackPressureError", "DeploymentUnhealthyError", "RayServeException", "ServeError"]


class ServeError(ActorsError):
    """Base class of errors raised by zeroserve's serving layer."""


RayServeException = ServeError  # the name Ray Serve 1.x programs catch


class BackPressureError(ServeError):
    """Raised by a handle call (HTTP 503 at the proxy) when every replica is at
    `max_ongoing_requests` and the caller's queue already holds `max_queued_requests`."""


class DeploymentUnhealthyError(ServeError):
    """Raised by `deploy()` / `serve.run()` when a deployment cannot become healthy: its
    constructor keeps failing (the last error is in the message and in `serve.status()`)."""
