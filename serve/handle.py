"""serve.handle: calling deployments from Python (Ray Serve's `ray.serve.handle`).

    from serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
"""

from ._data.handle import (
    DeploymentHandle,
    DeploymentResponse,
    DeploymentResponseGenerator,
    RayServeHandle,
    RayServeSyncHandle,
)

__all__ = ["DeploymentHandle", "DeploymentResponse", "DeploymentResponseGenerator", "RayServeHandle",
           "RayServeSyncHandle"]
