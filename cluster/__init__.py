"""cluster: the head (registry and scheduler), the per-machine agent, the `zeroserve` command."""

from .exceptions import ClusterError, NameTakenError, NodeStartError

__all__ = ["ClusterError", "NameTakenError", "NodeStartError"]
