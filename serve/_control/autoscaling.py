"""Autoscaling policy (the controller's): how many replicas a deployment should run, from reported load. Pure, clock injected.

Invariants:
- No I/O, no asyncio, no wall clock: every method that depends on time takes `now` (seconds,
  any monotonic origin) from the caller, so the policy is deterministic and testable.
- Load is the sum over sources (callers or replicas) of each source's mean `ongoing` over
  the look-back window [now - look_back_period_s, now]. A source with no report inside the
  window contributes 0 and is dropped, so a dead caller never pins the deployment up.
- Memory is bounded: samples older than the window are discarded, a source keeps at most
  MAX_SAMPLES_PER_SOURCE samples (the oldest go first), and sources whose reports have all
  aged out are removed, even when `desired_replicas` is not being called.
- `desired_replicas` always returns a value in [min_replicas, max_replicas]. It differs from
  the (clamped) current count only when the upscale / downscale condition has held
  continuously for its delay at the same current count; the one exception is 0 -> 1 under
  load, which is immediate. A current count outside the bounds is corrected at once.
- `current_replicas` is the controller's target (what it adopted from this policy), not the
  number of replicas that happen to be running right now; otherwise a slow start would read
  as "fewer than desired" and the policy would hand back the lower count.
"""

from __future__ import annotations

import math
from collections import deque

from .._autoscaling_config import AutoscalingConfig

__all__ = ["AutoscalingPolicy", "MAX_SAMPLES_PER_SOURCE"]

MAX_SAMPLES_PER_SOURCE = 1024
"""Hard cap on samples kept per source, for a source that reports far faster than the window needs."""

_EPS = 1e-9


class AutoscalingPolicy:
    """Turns load reports into a replica count for one deployment (see the module docstring)."""

    def __init__(self, config: AutoscalingConfig, now: float, current_replicas: int | None = None) -> None:
        if not isinstance(config, AutoscalingConfig):
            raise TypeError(f"config must be an AutoscalingConfig, got {type(config).__name__}")
        self.config = config
        # source -> (time, ongoing) samples in time order, all within the window of the last prune.
        self._sources: dict[str, deque[tuple[float, float]]] = {}
        self._last_full_prune = now
        # Delay timers: (current count the condition was measured against, time it started holding).
        self._upscale: tuple[int, float] | None = None
        self._downscale: tuple[int, float] | None = None
        # The last count the controller reported (status only; decisions use the argument of each call).
        self.current_replicas = self.initial() if current_replicas is None else current_replicas

    def initial(self) -> int:
        """The replica count a new deployment starts with."""
        c = self.config
        return c.min_replicas if c.initial_replicas is None else c.initial_replicas

    # -- load --------------------------------------------------------------------------------

    def record(self, now: float, source: str, ongoing: float) -> None:
        """A caller or replica `source` reports its requests in flight for this deployment at time `now`."""
        if isinstance(ongoing, bool) or not isinstance(ongoing, (int, float)) or not ongoing >= 0:
            raise ValueError(f"ongoing requests reported by {source!r} must be a number >= 0, got {ongoing!r}")
        if not math.isfinite(ongoing):
            raise ValueError(f"ongoing requests reported by {source!r} must be finite, got {ongoing!r}")
        samples = self._sources.get(source)
        if samples is None:
            samples = self._sources[source] = deque(maxlen=MAX_SAMPLES_PER_SOURCE)
        if samples and now < samples[-1][0]:
            # A report that arrived out of order: keep the samples sorted by time.
            merged = sorted([*samples, (now, float(ongoing))])
            samples.clear()
            samples.extend(merged)  # maxlen drops the oldest
        else:
            samples.append((now, float(ongoing)))
        self._prune_source(source, now)
        if now - self._last_full_prune >= self.config.look_back_period_s:
            self._prune_all(now)

    def forget(self, source: str) -> None:
        """Drop everything `source` reported (a caller or replica that is known to be gone)."""
        self._sources.pop(source, None)

    def load(self, now: float) -> float:
        """Total requests in flight: the sum over sources of each one's mean over the look-back window."""
        self._prune_all(now)
        total = 0.0
        for samples in self._sources.values():
            total += sum(v for _, v in samples) / len(samples)
        return total

    def _prune_source(self, source: str, now: float) -> None:
        samples = self._sources[source]
        horizon = now - self.config.look_back_period_s
        while samples and samples[0][0] < horizon:
            samples.popleft()
        if not samples:
            del self._sources[source]

    def _prune_all(self, now: float) -> None:
        for source in list(self._sources):
            self._prune_source(source, now)
        self._last_full_prune = now

    # -- decision ----------------------------------------------------------------------------

    def _target(self, load: float, current: int) -> int:
        """The smoothed, clamped count the load calls for, ignoring delays."""
        c = self.config
        raw = max(0, math.ceil(load / c.target_ongoing_requests - _EPS))
        if load > 0:
            raw = max(raw, 1)
        if raw > current:
            desired = math.ceil(current + c.upscale_smoothing_factor * (raw - current) - _EPS)
        elif raw < current:
            desired = math.floor(current + c.downscale_smoothing_factor * (raw - current) + _EPS)
        else:
            desired = current
        if load > 0:
            desired = max(desired, 1)
        return min(max(desired, c.min_replicas), c.max_replicas)

    def desired_replicas(self, now: float, current_replicas: int) -> int:
        """The replica count to run now."""
        c = self.config
        self.current_replicas = current_replicas
        current = min(max(current_replicas, c.min_replicas), c.max_replicas)
        if current != current_replicas:
            self._upscale = self._downscale = None
            return current
        load = self.load(now)
        desired = self._target(load, current)
        if desired > current:
            self._downscale = None
            if self._upscale is None or self._upscale[0] != current:
                self._upscale = (current, now)
            if current == 0:
                return 1  # scale from zero at once: the first request must not wait upscale_delay_s
            if now - self._upscale[1] >= c.upscale_delay_s:
                return desired
        elif desired < current:
            self._upscale = None
            if self._downscale is None or self._downscale[0] != current:
                self._downscale = (current, now)
            if now - self._downscale[1] >= c.downscale_delay_s:
                return desired
        else:
            self._upscale = self._downscale = None
        return current
