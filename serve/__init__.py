"""serve: deployments, the controller, replicas and handles, on the `actors` runtime.

    import serve

    @serve.deployment(num_replicas=2)
    class Model:
        def __call__(self, x):
            return x * 2

    handle = serve.run(Model.bind())
    assert handle.remote(21).result() == 42
"""

from . import dag, drivers, http_adapters
from ._api import delete, get_deployment, list_deployments, run, shutdown, start, status
from ._batching import batch
from ._config import HTTPOptions
from ._deployment import Application, Deployment, deployment
from ._handle import DeploymentHandle, DeploymentResponse, RayServeHandle, RayServeSyncHandle
from ._ingress import ingress
from ._replica import get_replica_context
from .exceptions import BackPressureError, DeploymentUnhealthyError, RayServeException, ServeError

__all__ = [
    "Application",
    "BackPressureError",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentUnhealthyError",
    "HTTPOptions",
    "RayServeException",
    "RayServeHandle",
    "RayServeSyncHandle",
    "ServeError",
    "batch",
    "dag",
    "delete",
    "drivers",
    "deployment",
    "get_deployment",
    "get_replica_context",
    "http_adapters",
    "ingress",
    "list_deployments",
    "run",
    "shutdown",
    "start",
    "status",
]
