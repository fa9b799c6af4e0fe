"""Calls the controller's state machines have in flight, as the machines see them.

A state machine never awaits: it starts a call through its IO seam, keeps the `Pending`
it got, and looks at it on a later step. `error_of` and `describe` read a finished one.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Protocol

__all__ = ["Completion", "Pending", "describe", "error_of"]


class Pending(Protocol):
    """What an ObjectRef (or a test's fake) offers a state machine."""

    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> Any: ...


class Completion(Protocol):
    """Something that finishes (a kill, which a shutdown waits for): ask, or await it."""

    def done(self) -> bool: ...

    def __await__(self) -> Generator[Any, None, Any]: ...


def error_of(pending: Pending) -> BaseException | None:
    """The exception a finished call raised; None if it succeeded."""
    try:
        pending.result(0)
    except Exception as e:  # the remote error, with its traceback in its message
        return e
    return None


def describe(error: BaseException) -> str:
    """An error as a status message shows it: its type and its text."""
    return f"{type(error).__name__}: {error}"
