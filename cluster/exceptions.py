"""Exceptions of the cluster layer (head, agents, the `zeroserve` command)."""

from __future__ import annotations

from actors import ActorsError

__all__ = ["ClusterError", "NameTakenError", "NodeStartError", "BlobTooLargeError", "TooManyPendingActorsError"]


class ClusterError(ActorsError):
    """Base class of errors raised by the head, the agents and the CLI."""


class NameTakenError(ClusterError, ValueError):
    """Raised by the head's `create_actor` when a live actor already has the requested
    name in that namespace (and `get_if_exists` was not given)."""


class NodeStartError(ClusterError):
    """Raised by `zeroserve start` when the node cannot start: port in use, head
    unreachable, wrong token, a head already running at that address."""


class BlobTooLargeError(ClusterError, ValueError):
    """Raised by the head's `create_actor` when an actor's pickled class and constructor
    arguments, and by `kv_put` when a value, exceed what the head stores per record
    (`$ZEROSERVE_HEAD_MAX_BLOB_BYTES`, 16 MiB by default). Nothing is stored."""


class TooManyPendingActorsError(ClusterError):
    """Raised by the head's `create_actor` when the creating job already has as many
    actors waiting for resources as allowed (`$ZEROSERVE_MAX_PENDING_ACTORS_PER_JOB`,
    10,000 by default). Nothing is created; retry once some have started."""
