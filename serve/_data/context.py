"""Which replica this code runs in: `serve.get_replica_context()`.

Set by the replica actor for its constructor, its requests and its streams (a context
variable), and for the whole process once the replica is built (code outside a request,
such as a thread the user started, still finds it).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

__all__ = ["ReplicaContext", "get_replica_context", "current_context", "set_process_context"]


@dataclass(frozen=True, slots=True)
class ReplicaContext:
    """What `serve.get_replica_context()` returns inside a replica."""

    deployment: str
    replica_tag: str
    app_name: str
    servable_object: Any = None


current_context: contextvars.ContextVar[ReplicaContext | None] = contextvars.ContextVar("serve_replica", default=None)
_process_context: ReplicaContext | None = None


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in; RuntimeError outside a replica."""
    ctx = current_context.get() or _process_context
    if ctx is None:
        raise RuntimeError("serve.get_replica_context() was called outside a replica")
    return ctx


def set_process_context(ctx: ReplicaContext) -> None:
    global _process_context
    _process_context = ctx
