"""serve.handle: calling deployments from Python (Ray Serve's `ray.serve.handle`).

    from serve.handle import DeploymentHandle, DeploymentResponse
"""

from ._data.handle import DeploymentHandle, DeploymentResponse, RayServeHandle, RayServeSyncHandle

__all__ = ["DeploymentHandle", "DeploymentResponse", "RayServeHandle", "RayServeSyncHandle"]
