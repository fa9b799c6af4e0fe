"""serve: deployments, the controller, replicas and handles, on the `actors` runtime.

    import serve

    @serve.deployment(num_replicas=2)
    class Model:
        def __call__(self, x):
            return x * 2

    handle = serve.run(Model.bind())
    assert handle.remote(21).result() == 42

Layout: the public names are here and in `dag`, `drivers`, `handle`, `http_adapters`,
`exceptions`, `messages`; internals are grouped by role: `_api` (what a driver calls:
deployments, graphs, run/start/shutdown), `_control` (the controller: reconcile loop,
deployment and proxy state machines, autoscaling, checkpoint and recovery, its IO seam),
`_data` (the request path: client, handles, router, replica, streams, HTTP proxy actor,
and what observes it: request contexts, logs, `serve_*` metrics, tracing),
`_model` / `_config` / `_obs_config` / `_schema` / `_build` (options and config files:
pydantic models, one formatter of their errors) and `_cli` (the commands). `metrics` holds
the user metrics (`serve.metrics.Counter`, `Gauge`, `Histogram`).
"""

from . import dag, drivers, handle, http_adapters, metrics, schema
from ._api.deployment import Deployment, deployment
from ._api.functions import (
    delete,
    get_app_handle,
    get_deployment,
    get_deployment_handle,
    get_handle,
    list_deployments,
    run,
    status,
)
from ._api.graph import Application
from ._api.startup import shutdown, start
from ._config import HTTPOptions
from ._data.batching import batch
from ._data.context import RequestContext, get_replica_context, get_request_context
from ._data.handle import DeploymentHandle, DeploymentResponse, RayServeHandle, RayServeSyncHandle
from ._data.ingress import ingress
from ._data.multiplex import get_multiplexed_model_id, multiplexed
from ._obs_config import LoggingConfig, TracingConfig
from .exceptions import (
    ApplicationNotFoundError,
    BackPressureError,
    DeploymentNotFoundError,
    DeploymentUnhealthyError,
    DeployTimeoutError,
    MethodNotFoundError,
    RayServeException,
    ServeError,
)

__all__ = [
    "Application",
    "ApplicationNotFoundError",
    "BackPressureError",
    "DeployTimeoutError",
    "Deployment",
    "DeploymentHandle",
    "DeploymentNotFoundError",
    "DeploymentResponse",
    "DeploymentUnhealthyError",
    "HTTPOptions",
    "LoggingConfig",
    "MethodNotFoundError",
    "RayServeException",
    "RayServeHandle",
    "RayServeSyncHandle",
    "RequestContext",
    "ServeError",
    "TracingConfig",
    "batch",
    "dag",
    "delete",
    "drivers",
    "deployment",
    "get_app_handle",
    "get_deployment",
    "get_deployment_handle",
    "get_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "get_request_context",
    "handle",
    "http_adapters",
    "ingress",
    "list_deployments",
    "metrics",
    "multiplexed",
    "run",
    "schema",
    "shutdown",
    "start",
    "status",
]
