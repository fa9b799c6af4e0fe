"""Cheap metric families for Serve's own `serve_*` metrics, read by a collector at scrape time.

The request path only touches plain Python objects: `family.cell(labels...)` returns a cell
(made once per label set, then cached by the caller), and counting is `cell.value += 1` or
`cell.observe(ms)` (a bisect and two additions). One `prometheus_client` collector,
registered in the process's `metrics_registry()` at the first family made, turns the cells
into metric families when the node scrapes this process; gauges that are a function of
state (requests queued, replicas running) are `GaugeFunc`s computed at that moment.

Invariants: a cell is written by one thread at a time (its process's event loop, or the log
flush that tallies the queued records of requests, under its file's lock: see
`logs.AccessLog`). The
collector runs the `before_collect` hooks first (they tally what is queued, so counts are
exact), then reads the cells by copying, so it never sees a torn histogram it cannot
render. `ENABLED` is False when `$ZEROSERVE_SERVE_METRICS=0`: callers then skip counting
altogether.
"""

from __future__ import annotations

import bisect
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

__all__ = ["ENABLED", "LATENCY_BUCKETS_MS", "Counter", "CounterFunc", "Gauge", "GaugeFunc", "Histogram",
           "before_collect", "families", "family"]

ENABLED = os.environ.get("ZEROSERVE_SERVE_METRICS", "1") != "0"

# Ray Serve's latency buckets (ms), with finer ones below 1 ms (zeroserve answers in less).
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000)

Labels = tuple[str, ...]
_bisect_left = bisect.bisect_left
_bisect_right = bisect.bisect_right
SORT_FROM = 32  # a histogram's batch this long is counted by sorting it (`_HistogramCell.observe_all`)


class _Cell:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0


class _HistogramCell:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[_bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_all(self, values: Sequence[float]) -> None:
        """`observe` each of `values` (a batch). A batch of SORT_FROM or more is sorted
        once, then counted with one bisect per bucket bound, not one per value: a batch of
        2,000 latencies takes a third to a half of the loop's time."""
        counts, bounds = self.counts, self.bounds
        if len(values) < SORT_FROM:
            for value in values:
                counts[_bisect_left(bounds, value)] += 1
        else:
            ordered = sorted(values)
            below = 0
            for i, bound in enumerate(bounds):  # the values <= bound, not counted in a lower bucket
                upto = _bisect_right(ordered, bound, below)
                counts[i] += upto - below
                below = upto
            counts[-1] += len(ordered) - below
        self.sum += sum(values)


class _Family:
    kind = ""

    def __init__(self, name: str, doc: str, labels: Labels) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.cells: dict[Labels, Any] = {}
        _register(self)

    def remove(self, *values: str) -> None:
        self.cells.pop(values, None)

    def _check(self, values: Labels) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} has labels {self.labels}, got values {values}")

    def collect(self) -> Any:
        raise NotImplementedError


class Counter(_Family):
    def cell(self, *values: str) -> _Cell:
        cell = self.cells.get(values)
        if cell is None:
            self._check(values)
            cell = self.cells[values] = _Cell()
        return cell

    def collect(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for values, cell in list(self.cells.items()):
            family.add_metric(values, cell.value)
        return family


class Gauge(Counter):
    def collect(self) -> GaugeMetricFamily:  # type: ignore[override]
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for values, cell in list(self.cells.items()):
            family.add_metric(values, cell.value)
        return family


class GaugeFunc(_Family):
    """A gauge computed at scrape time from its sources: objects (held weakly) whose
    `metric_rows(name)` yields (label values, value)."""

    def __init__(self, name: str, doc: str, labels: Labels) -> None:
        super().__init__(name, doc, labels)
        self.sources: weakref.WeakSet[Any] = weakref.WeakSet()

    def add_source(self, source: Any) -> None:
        self.sources.add(source)

    def rows(self) -> Iterator[tuple[Labels, float]]:
        for source in list(self.sources):
            yield from source.metric_rows(self.name)

    def collect(self) -> Any:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for values, value in self.rows():
            family.add_metric(values, value)
        return family


class CounterFunc(GaugeFunc):
    """A counter computed at scrape time (the sources keep the counts)."""

    def collect(self) -> Any:
        family = CounterMetricFamily(self.name, self.doc, labels=self.labels)
        for values, value in self.rows():
            family.add_metric(values, value)
        return family


class Histogram(_Family):
    def __init__(self, name: str, doc: str, labels: Labels, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        super().__init__(name, doc, labels)
        self.bounds = tuple(float(b) for b in bounds)

    def cell(self, *values: str) -> _HistogramCell:
        cell = self.cells.get(values)
        if cell is None:
            self._check(values)
            cell = self.cells[values] = _HistogramCell(self.bounds)
        return cell

    def collect(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for values, cell in list(self.cells.items()):
            counts, total = list(cell.counts), cell.sum
            buckets, running = [], 0
            for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == float("inf") else _le(bound), running))
            family.add_metric(values, buckets, total)
        return family


def _le(bound: float) -> str:
    return str(int(bound)) + ".0" if bound == int(bound) else repr(bound)


# -- the process's collector -------------------------------------------------------------------
_families: dict[str, _Family] = {}
_lock = threading.Lock()
_collector_registered = False
_before_collect: list[Callable[[], None]] = []


def before_collect(hook: Callable[[], None]) -> None:
    """Run `hook` before each scrape of this process (to count what is still queued)."""
    _before_collect.append(hook)


class _Collector:
    """Serve's families, for this process's `metrics_registry()`."""

    def collect(self) -> Iterator[Any]:
        for hook in _before_collect:
            hook()
        for family in list(_families.values()):
            try:
                yield family.collect()
            except RuntimeError:  # a dict changed size under a GaugeFunc: skip it this scrape
                continue

    def describe(self) -> list:
        return []  # no fixed description: families come and go with the process's roles


def _register(family: _Family) -> None:
    global _collector_registered
    with _lock:
        if family.name in _families:
            raise ValueError(f"the metric {family.name} is defined twice")
        _families[family.name] = family
        if not _collector_registered:
            from actors.system import metrics_registry

            metrics_registry().register(_Collector())
            _collector_registered = True


def families() -> dict[str, _Family]:
    """Serve's families in this process, by name (for tests and the benchmark)."""
    return dict(_families)


def family(kind: type, name: str, doc: str, labels: Labels, **kw: Any) -> Any:
    """The family `name` of this process, made on first use (modules that define the same
    family share it)."""
    with _lock:
        existing = _families.get(name)
    if existing is not None:
        return existing
    return kind(name, doc, labels, **kw)
