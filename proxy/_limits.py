"""Warnings when a proxy's limits trip (connections refused, bodies too slow, heads too
slow), at most one line per limit every LOG_EVERY_S, counting the trips it stands for: an
attack of 20,000 slow clients is a handful of lines, not 20,000."""

from __future__ import annotations

import logging
import time

__all__ = ["LOG_EVERY_S", "LimitLog"]

LOG_EVERY_S = 10.0
log = logging.getLogger("proxy.limits")


class LimitLog:
    def __init__(self, what: str, clock=time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.trips = 0
        self._unlogged = 0
        self._logged_at = float("-inf")

    def trip(self, detail: str = "") -> None:
        self.trips += 1
        self._unlogged += 1
        now = self.clock()
        if now - self._logged_at >= LOG_EVERY_S:
            log.warning("%s%s (%d time%s since the last such line)", self.what, f": {detail}" if detail else "",
                        self._unlogged, "" if self._unlogged == 1 else "s")
            self._logged_at, self._unlogged = now, 0
