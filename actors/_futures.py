"""The futures a call completes: asyncio ones (calls made on the runtime's loop) or
`concurrent.futures` ones (calls made from other threads), and moving an outcome between
the two kinds. Both are completed on the runtime's loop thread only."""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, TypeAlias

__all__ = ["CallFuture", "copy_state"]

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
