"""Ray Serve's `ray.serve.schema` names that zeroserve has: `from serve.schema import LoggingConfig`,
and the types of `serve.status()`: `ServeStatus`, `ApplicationStatusOverview`, `DeploymentStatusOverview`."""

from ._api.status import ApplicationStatusOverview, DeploymentStatusOverview, ServeStatus
from ._obs_config import LoggingConfig, TracingConfig

__all__ = ["ApplicationStatusOverview", "DeploymentStatusOverview", "LoggingConfig", "ServeStatus", "TracingConfig"]
