"""Ray Serve's `ray.serve.schema` names that zeroserve has: `from serve.schema import LoggingConfig`."""

from ._obs_config import LoggingConfig, TracingConfig

__all__ = ["LoggingConfig", "TracingConfig"]
