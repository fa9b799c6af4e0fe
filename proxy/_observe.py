"""What the proxy tells about each request: its id, and an observer called at its end.

Request ids: the client's `X-Request-ID` when it is a sane token (1 to 128 visible ASCII
characters: no spaces or control characters), else a new one (a random per-process prefix
and a counter). The id is returned in the response's `X-Request-ID` header on every status,
the proxy's own answers included, and is the current one (`current_request_id()`, a
context variable) for whatever runs while the request is handled in this process.

`RequestObserver` is how the layer above watches requests without the proxy knowing about
metrics, logs or traces: `begin` (only when `tracing` is true) before the request is
routed, `end` once its response is written (streams: when the stream ends).
"""

from __future__ import annotations

import contextvars
import itertools
import os
import re
from typing import Any, Protocol

__all__ = ["REQUEST_ID_HEADER", "RequestObserver", "current_request_id", "new_request_id", "request_id_of"]

REQUEST_ID_HEADER = b"x-request-id"
_SANE = re.compile(rb"[\x21-\x7e]{1,128}")
_PREFIX = ""  # random per process (a fork server imports this once for many: each child draws its own)
_ids = itertools.count(1)
_current: contextvars.ContextVar[str] = contextvars.ContextVar("proxy_request_id", default="")


def _new_prefix() -> None:
    global _PREFIX, _ids
    _PREFIX = "p" + os.urandom(5).hex()
    _ids = itertools.count(1)


_new_prefix()
os.register_at_fork(after_in_child=_new_prefix)


def new_request_id() -> str:
    return f"{_PREFIX}{next(_ids):08x}"


def request_id_of(headers: Any) -> str:
    """The id of a request with these ASGI headers: the client's if sane, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _SANE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


def current_request_id() -> str:
    """The id of the HTTP request this code runs for in the proxy ("" outside one)."""
    return _current.get()


def set_current(request_id: str) -> None:
    _current.set(request_id)


class RequestObserver(Protocol):
    tracing: bool  # call `begin` for each request

    def begin(self, scope: dict, request_id: str) -> Any:
        """Before routing (in the request's own task); what it returns goes to `end`."""

    def end(self, token: Any, method: str, route: str, target: str | None, status: int, started: float,
            request_id: str, path: str) -> None:
        """The response is written: `route` is the matched route prefix ("" if none; the
        built-ins' own paths), `target` its deployment, `started` a `perf_counter()`."""
