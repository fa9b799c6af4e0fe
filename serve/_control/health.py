"""A periodic health check of one actor (a replica, a proxy), as a state machine sees it.

At most one check is in flight; the next is sent a period after the last answer. `poll`
sends a check when one is due and says what became of the one in flight: answered, failed
(with its error), or unanswered past the timeout. What an outcome means (a failure count, a
restart) is the owner's.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from .pending import Pending, error_of

__all__ = ["HealthCheck", "Outcome"]


class Outcome(enum.Enum):
    ANSWERED = "answered"
    FAILED = "failed"
    LATE = "late"  # unanswered for longer than the timeout (given up on: the next poll sends anew)


@dataclass
class HealthCheck:
    pending: Pending | None = None  # the check in flight
    sent_at: float = 0.0
    next_at: float = 0.0  # when the next check is due

    def poll(self, now: float, send: Callable[[], Pending], period_s: float,
             timeout_s: float) -> tuple[Outcome, BaseException | None] | None:
        """Send a check if one is due (`send()` starts it); the outcome of the one in flight
        once there is one (with the error of a FAILED one), else None."""
        if self.pending is None:
            if now >= self.next_at:
                self.pending, self.sent_at = send(), now
            return None
        if self.pending.done():
            error = error_of(self.pending)
            self.pending = None
            self.next_at = now + period_s
            return (Outcome.ANSWERED, None) if error is None else (Outcome.FAILED, error)
        if now - self.sent_at > timeout_s:
            self.pending = None
            return Outcome.LATE, None
        return None

    def unanswered_for(self, now: float) -> float:
        """How long the check in flight has gone unanswered (0 if none is)."""
        return now - self.sent_at if self.pending is not None else 0.0
