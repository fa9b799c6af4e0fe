"""The futures a call completes: asyncio ones (calls made on the runtime's loop) or
`concurrent.futures` ones (calls made from other threads), and moving an outcome between
the two kinds. Both are completed on the runtime's loop thread only. Also `cancelling()`,
which retry loops check so that a cancellation turned into an error still ends them."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, TypeAlias

__all__ = ["CallFuture", "cancelling", "copy_state"]

CallFuture: TypeAlias = "asyncio.Future[Any] | concurrent.futures.Future[Any]"


def copy_state(src: CallFuture, dst: CallFuture) -> None:
    """Give `dst` the outcome of the finished future `src` (asyncio or concurrent, either way)."""
    if dst.done():
        return
    if src.cancelled():
        dst.cancel()
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


def cancelling() -> bool:
    """Whether the running task has a cancellation pending (Python 3.11+; False before).
    A retry loop checks it after a failure: Python 3.11's `asyncio.wait_for` raises the
    awaited call's failure and drops a cancellation that came at the same moment, and a
    loop that retried then would keep its task (and a process shutting down) alive."""
    task = asyncio.current_task()
    pending = getattr(task, "cancelling", None)
    return bool(pending()) if pending is not None else False
