"""Which runtime this process uses: the one place that knows.

A worker sets its runtime at start; a driver's `actors.init()` sets the driver runtime
and registers how to initialise implicitly (the first `.remote()` of a script that never
called `init()` starts an embedded cluster, as users of Ray expect).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["current", "current_or_init", "set_current", "set_auto_init"]

_runtime: Any = None
_auto_init: Callable[[], None] | None = None


def current() -> Any:
    """This process's runtime, or None before `actors.init()`."""
    return _runtime


def set_current(rt: Any) -> None:
    global _runtime
    _runtime = rt


def set_auto_init(fn: Callable[[], None]) -> None:
    global _auto_init
    _auto_init = fn


def current_or_init() -> Any:
    rt = _runtime
    if rt is None:
        if _auto_init is None:
            from .exceptions import NotInitializedError

            raise NotInitializedError("call actors.init() first")
        _auto_init()
        rt = _runtime
    return rt
