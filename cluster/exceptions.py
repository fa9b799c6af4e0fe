"""Exceptions of the cluster layer (head, agents, the `zeroserve` command)."""

from __future__ import annotations

from actors import ActorsError

__all__ = ["ClusterError", "NameTakenError", "NodeStartError"]


class ClusterError(ActorsError):
    """Base class of errors raised by the head, the agents and the CLI."""


class NameTakenError(ClusterError, ValueError):
    """Raised by the head's `create_actor` when a live actor already has the requested
    name in that namespace (and `get_if_exists` was not given)."""


class NodeStartError(ClusterError):
    """Raised by `zeroserve start` when the node cannot start: port in use, head
    unreachable, wrong token, a head already running at that address."""
