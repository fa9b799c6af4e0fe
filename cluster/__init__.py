"""cluster: the head (registry and scheduler), the per-machine agent, the `zeroserve` command."""

from .exceptions import BlobTooLargeError, ClusterError, NameTakenError, NodeStartError, TooManyPendingActorsError

__all__ = ["BlobTooLargeError", "ClusterError", "NameTakenError", "NodeStartError", "TooManyPendingActorsError"]
