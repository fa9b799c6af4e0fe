"""Small helpers for futures whose outcome nobody awaits."""

from __future__ import annotations

import asyncio

__all__ = ["ignore_outcome"]


def ignore_outcome(fut: asyncio.Future) -> None:
    """A done-callback for a call whose outcome nobody reads: retrieve it, so a failure is
    not logged as 'Future exception was never retrieved'."""
    if not fut.cancelled():
        fut.exception()
