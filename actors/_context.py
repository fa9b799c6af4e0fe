"""Which runtime this process uses: the one place that knows.

A worker sets its runtime at start; a driver's `actors.init()` sets the driver runtime
and registers how to initialise implicitly (the first `.remote()` of a script that never
called `init()` starts an embedded cluster, as users of Ray expect).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._runtime import Runtime

__all__ = ["current", "current_or_init", "set_current", "set_auto_init"]

_runtime: Runtime | None = None
_auto_init: Callable[[], Any] | None = None


def current() -> Runtime | None:
    """This process's runtime, or None before `actors.init()`."""
    return _runtime


def set_current(rt: Runtime | None) -> None:
    global _runtime
    _runtime = rt


def set_auto_init(fn: Callable[[], Any]) -> None:
    global _auto_init
    _auto_init = fn


def current_or_init() -> Runtime:
    rt = _runtime
    if rt is None:
        if _auto_init is not None:
            _auto_init()
            rt = _runtime
        if rt is None:
            from .exceptions import NotInitializedError

            raise NotInitializedError("call actors.init() first")
    return rt
