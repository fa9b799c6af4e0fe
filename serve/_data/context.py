"""Which replica this code runs in (`serve.get_replica_context()`), and which request it
serves (`serve.get_request_context()`).

The replica context is set by the replica actor for its constructor, its requests and its
streams (a context variable), and for the whole process once the replica is built (code
outside a request, such as a thread the user started, still finds it).

The request context travels with every request: the proxy makes one per HTTP request (its
id is the client's `X-Request-ID` when that is a sane token, else a new one), a handle call
made while handling a request carries the caller's on (same id, route and application), and
a handle call made outside any request (a driver) gets a new id. The router sends it to the
replica with the call; the replica sets it for the user's code, its logs and its metrics.

On the request path a context is a plain tuple `Ctx` = (request_id, route, app_name,
multiplexed_model_id, traceparent), indexed by `RID`, `ROUTE`, `APP`, `MODEL`, `TRACE`: it is
made per request and pickled with every call, and a plain tuple of strings costs a fraction
of any class there (no class lookup when pickled or unpickled). `get_request_context()`
turns the current one into a `RequestContext` for the user.

Invariant: a context is immutable; "no request" is `NO_REQUEST` (empty fields), so reading it
never needs a None check.
"""

from __future__ import annotations

import contextvars
import itertools
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["APP", "MODEL", "NO_REQUEST", "RID", "ROUTE", "TRACE", "Ctx", "ReplicaContext", "RequestContext",
           "current_context", "current_request", "get_replica_context", "get_request_context", "new_request_id",
           "process_context", "set_process_context"]


@dataclass(frozen=True, slots=True)
class ReplicaContext:
    """What `serve.get_replica_context()` returns inside a replica."""

    deployment: str
    replica_tag: str
    app_name: str
    servable_object: Any = None

    @property
    def replica_id(self) -> str:
        """The replica's id as serve prints it everywhere (status, logs, metrics): "<app>#<deployment>#<tag>"."""
        return f"{self.app_name}#{self.deployment}#{self.replica_tag}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What `serve.get_request_context()` returns: the request being handled.

    `request_id`: the HTTP request's (echoed in its `X-Request-ID` response header) or the
    handle call's; `route`: the route prefix the HTTP request matched ("" for handle calls
    made outside an HTTP request); `app_name`: the application; `multiplexed_model_id`:
    the model the request is for (its `serve_multiplexed_model_id` header, or the handle's
    `.options(multiplexed_model_id=...)`; "" for none). `traceparent` (internal): the W3C trace context of the caller's
    span, when tracing is on."""

    request_id: str = ""
    route: str = ""
    app_name: str = ""
    multiplexed_model_id: str = ""
    traceparent: str = ""


Ctx = tuple[str, str, str, str, str]  # (request_id, route, app_name, multiplexed_model_id, traceparent)
RID, ROUTE, APP, MODEL, TRACE = range(5)
NO_REQUEST: Ctx = ("", "", "", "", "")

current_context: contextvars.ContextVar[ReplicaContext | None] = contextvars.ContextVar("serve_replica", default=None)
current_request: contextvars.ContextVar[Ctx] = contextvars.ContextVar("serve_request", default=NO_REQUEST)
_process_context: ReplicaContext | None = None

# Request ids made here: a random per-process prefix and a counter (unique across the cluster
# without a system call per request). A fork server imports this module once for many
# processes, so each child draws its own prefix.
_ID_PREFIX = ""
_ids = itertools.count(1)


def _new_id_prefix() -> None:
    global _ID_PREFIX, _ids
    _ID_PREFIX = os.urandom(6).hex()
    _ids = itertools.count(1)


_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):08x}"


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in; RuntimeError outside a replica."""
    ctx = current_context.get() or _process_context
    if ctx is None:
        raise RuntimeError("serve.get_replica_context() was called outside a replica")
    return ctx


def process_context() -> ReplicaContext | None:
    """The replica this process hosts (None outside a replica)."""
    return _process_context


def get_request_context() -> RequestContext:
    """The request this code handles (`request_id`, `route`, `app_name`,
    `multiplexed_model_id`); all fields empty outside a request."""
    return RequestContext(*current_request.get())


def set_process_context(ctx: ReplicaContext) -> None:
    global _process_context
    _process_context = ctx
