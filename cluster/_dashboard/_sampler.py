"""The dashboard's metrics: Serve's request counters, histograms and gauges, turned into
per-deployment time series (15 minutes) and per-replica current figures.

A `Sampler` is fed one scrape at a time (`add(t, text_by_node)`: the Prometheus text of
every node's metrics endpoint, parsed with prometheus_client's parser). From two scrapes
in a row it takes each series' increase — per series, so a replica that died and came back
(its counter starting again at 0) adds what it counted since, never a negative — and
sums those by deployment and by replica.

Invariants:
- each deployment's history holds at most `HISTORY_S / min interval` points (a ring);
- a replica's figures are over the last `WINDOW` intervals (about 10 s), and a replica
  that no scrape shows any more is forgotten after `WINDOW` scrapes;
- nothing here does I/O: the server scrapes, this only computes.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["HISTORY_S", "Sampler", "Snapshot", "parse", "quantile"]

HISTORY_S = 15 * 60.0
WINDOW = 5  # intervals a replica's rates and percentiles are taken over

REQUESTS = "serve_deployment_request_counter_total"
ERRORS = "serve_deployment_error_counter_total"
LATENCY = "serve_deployment_processing_latency_ms_bucket"
ONGOING = "serve_replica_processing_queries"
RUNNING = "serve_deployment_running_replicas"
TARGET = "serve_deployment_target_replicas"
START_TIME = "process_start_time_seconds"
_COUNTERS = (REQUESTS, ERRORS, LATENCY)
_WANTED = (REQUESTS, ERRORS, LATENCY, ONGOING, RUNNING, TARGET, START_TIME)

DepKey = tuple[str, str]  # (application, deployment)
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]  # (sample name, sorted labels incl. node)


@dataclass(slots=True)
class Snapshot:
    """One scrape, reduced to what the dashboard reads."""

    counters: dict[SeriesKey, float] = field(default_factory=dict)
    ongoing: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (app, dep, replica)
    running: dict[DepKey, float] = field(default_factory=dict)
    target: dict[DepKey, float] = field(default_factory=dict)
    started: dict[tuple[str, str], float] = field(default_factory=dict)  # (node ip, pid) -> start time


def parse(text_by_node: Mapping[str, str]) -> Snapshot:
    """The samples the dashboard needs out of each node's Prometheus text."""
    snap = Snapshot()
    for node, text in text_by_node.items():
        # Only the lines of the few series read here go to the (slow) parser.
        kept = "\n".join(ln for ln in text.splitlines() if ln.startswith(_WANTED))
        for family in text_string_to_metric_families(kept + "\n"):
            for s in family.samples:
                name, labels, value = s.name, s.labels, s.value
                if name in _COUNTERS:
                    snap.counters[(name, (("node", node), *sorted(labels.items())))] = value
                elif name == ONGOING:
                    key = (labels.get("application", ""), labels.get("deployment", ""), labels.get("replica", ""))
                    snap.ongoing[key] = snap.ongoing.get(key, 0.0) + value
                elif name in (RUNNING, TARGET):
                    dep = (labels.get("application", ""), labels.get("deployment", ""))
                    (snap.running if name == RUNNING else snap.target)[dep] = value
                elif name == START_TIME and "pid" in labels:
                    snap.started[(node, labels["pid"])] = value
    return snap


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of a histogram given as {upper bound: count in that bucket alone}
    (linear within a bucket, as Prometheus' histogram_quantile); None without counts."""
    total = sum(buckets.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    lower = 0.0
    for upper in sorted(buckets):
        count = buckets[upper]
        if seen + count >= rank and count > 0:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        if not math.isinf(upper):
            lower = upper
    return lower


@dataclass(slots=True)
class _Interval:
    """What happened between two scrapes, summed by deployment and by replica."""

    dt: float
    requests: dict[tuple[str, ...], float] = field(default_factory=dict)
    errors: dict[tuple[str, ...], float] = field(default_factory=dict)
    buckets: dict[tuple[str, ...], dict[float, float]] = field(default_factory=dict)  # cumulative per le


def _interval(known: Mapping[SeriesKey, tuple[float, float]], cur: Snapshot, dt: float) -> _Interval:
    """`known`: each series' last value (and when it was seen), so a series missing from one
    scrape (its process was slow to answer) does not count its whole total when it is back."""
    out = _Interval(dt)
    for (name, labels), value in cur.counters.items():
        before = known.get((name, labels))
        inc = value if before is None or value < before[0] else value - before[0]
        lab = dict(labels)
        dep = (lab.get("application", ""), lab.get("deployment", ""))
        keys = (dep, (*dep, lab.get("replica", "")))
        if name == LATENCY:
            le = float(lab.get("le", "inf"))
            for k in keys:
                b = out.buckets.setdefault(k, {})
                b[le] = b.get(le, 0.0) + inc
        else:
            target = out.requests if name == REQUESTS else out.errors
            for k in keys:
                target[k] = target.get(k, 0.0) + inc
    return out


def _per_bucket(cumulative: Mapping[float, float]) -> dict[float, float]:
    out: dict[float, float] = {}
    below = 0.0
    for le in sorted(cumulative):
        out[le] = max(0.0, cumulative[le] - below)
        below = max(below, cumulative[le])
    return out


def _figures(intervals: Iterable[_Interval], key: tuple[str, ...]) -> dict[str, float | None]:
    dt = req = err = 0.0
    buckets: dict[float, float] = {}
    for iv in intervals:
        dt += iv.dt
        req += iv.requests.get(key, 0.0)
        err += iv.errors.get(key, 0.0)
        for le, n in _per_bucket(iv.buckets.get(key, {})).items():
            buckets[le] = buckets.get(le, 0.0) + n
    if dt <= 0:
        return {"rps": None, "errors_per_s": None, "p50_ms": None, "p99_ms": None}
    return {"rps": req / dt, "errors_per_s": err / dt, "p50_ms": quantile(0.5, buckets),
            "p99_ms": quantile(0.99, buckets)}


class Sampler:
    def __init__(self, history_s: float = HISTORY_S, min_interval_s: float = 2.0) -> None:
        self.history_s = history_s
        self._last: tuple[float, Snapshot] | None = None
        self._recent: deque[_Interval] = deque(maxlen=WINDOW)
        self._points = max(2, int(history_s / min_interval_s) + 1)
        self.history: dict[DepKey, deque[dict[str, Any]]] = {}
        self._known: dict[SeriesKey, tuple[float, float]] = {}  # series -> (last value, when)
        self.scrapes = 0

    @property
    def last(self) -> Snapshot | None:
        return self._last[1] if self._last is not None else None

    @property
    def last_time(self) -> float | None:
        return self._last[0] if self._last is not None else None

    def add(self, t: float, text_by_node: Mapping[str, str]) -> None:
        self.add_snapshot(t, parse(text_by_node))

    def add_snapshot(self, t: float, snap: Snapshot) -> None:
        self.scrapes += 1
        last, self._last = self._last, (t, snap)
        first = last is None or t <= last[0]
        iv = None if first or last is None else _interval(self._known, snap, t - last[0])
        for key, value in snap.counters.items():
            self._known[key] = (value, t)
        for key in [k for k, (_, seen) in self._known.items() if seen < t - self.history_s]:
            del self._known[key]
        if iv is None:
            return
        self._recent.append(iv)
        deps = {k for k in (*iv.requests, *iv.buckets) if len(k) == 2} | set(snap.running) | set(snap.target)
        deps |= {k for k in self.history}
        for dep in deps:
            figures = _figures([iv], dep)
            ring = self.history.get(dep)
            if ring is None:
                ring = self.history[dep] = deque(maxlen=self._points)
            ring.append({"t": round(t, 3), **{k: _round(v) for k, v in figures.items()},
                         "replicas": snap.running.get(dep), "target": snap.target.get(dep)})
            while ring and ring[0]["t"] < t - self.history_s:
                ring.popleft()
        for dep in [d for d, ring in self.history.items() if not ring]:
            del self.history[dep]

    def deployment(self, app: str, name: str) -> dict[str, Any]:
        """The deployment's history, and its figures over the last window."""
        return {"history": list(self.history.get((app, name), ())),
                "now": {k: _round(v) for k, v in _figures(self._recent, (app, name)).items()}}

    def replica(self, app: str, name: str, replica: str) -> dict[str, Any]:
        figures = {k: _round(v) for k, v in _figures(self._recent, (app, name, replica)).items()}
        snap = self.last
        figures["in_flight"] = snap.ongoing.get((app, name, replica)) if snap is not None else None
        return figures

    def started_at(self, node_ip: str, pid: int | None) -> float | None:
        snap = self.last
        if snap is None or pid is None:
            return None
        return snap.started.get((node_ip, str(pid)))


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)
