"""Metric families across processes: read one process's registry as plain data, merge the
families of a node's processes, render them as Prometheus text.

A process answers `rt/metrics` with `families_of(metrics_registry())`: plain tuples (no
prometheus_client objects on the wire). A node's agent merges the families of all its
processes with `merge_families`, each process with its own labels (`component`, `pid`),
and serves `render(...)`.

Merge rules (so the result is always a valid exposition):
- families of one name from several processes become one family; its type, help and
  unit are those of the first process that has it, and a family of the same name but
  another type is left out (logged once per name);
- a process's labels are added to each of its samples, except where the sample already
  has a label of that name (its own value stays: serve's `replica`, a user's `pid`);
- a sample whose name and labels another process already gave is left out, so no series
  appears twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric

__all__ = ["CONTENT_TYPE", "Family", "Sample", "families_of", "merge_families", "render", "sample_value"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# (sample name, labels, value, timestamp or None)
Sample = tuple[str, dict[str, str], float, "float | None"]
# (family name, type, help, unit, samples)
Family = tuple[str, str, str, str, list[Sample]]
_warned: set[tuple[str, str]] = set()


def families_of(registry: CollectorRegistry) -> list[Family]:
    """Everything `registry` reports now, as plain picklable tuples."""
    out: list[Family] = []
    for metric in registry.collect():
        samples: list[Sample] = []
        for s in metric.samples:
            ts = s.timestamp
            samples.append((s.name, dict(s.labels), float(s.value), None if ts is None else float(ts)))
        out.append((metric.name, metric.type, metric.documentation, metric.unit, samples))
    return out


def merge_families(processes: Iterable[tuple[Mapping[str, str], Sequence[Family]]]) -> list[Metric]:
    """One family per name over all `processes` ((labels, families) pairs), by the rules above."""
    merged: dict[str, Metric] = {}
    seen: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
    for extra, families in processes:
        for name, typ, doc, unit, samples in families:
            family = merged.get(name)
            if family is None:
                family = merged[name] = _metric(name, doc, typ, unit)
            elif family.type != typ:
                if (name, typ) not in _warned:
                    _warned.add((name, typ))
                    log.warning("metric %s is a %s in one process and a %s in another: left out where it is a %s",
                                name, family.type, typ, typ)
                continue
            for sample_name, labels, value, ts in samples:
                full = {**extra, **labels} if extra else labels
                key = (sample_name, tuple(sorted(full.items())))
                if key in seen:
                    continue
                seen.add(key)
                family.add_sample(sample_name, full, value, ts)
    return [merged[name] for name in sorted(merged)]


def _metric(name: str, doc: str, typ: str, unit: str) -> Metric:
    try:
        return Metric(name, doc, typ, unit)
    except ValueError:  # a unit the family's name does not end with (prometheus_client checks)
        return Metric(name, doc, typ)


class _Families:
    """A collector over fixed families (what `generate_latest` renders)."""

    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render(families: Sequence[Metric]) -> bytes:
    """Prometheus text exposition (format 0.0.4) of `families`."""
    return generate_latest(_Families(families))


def sample_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`, in exposition
    `text` (NaN if none): a reader for tests and tools."""
    from prometheus_client.parser import text_string_to_metric_families

    total, found = 0.0, False
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
                found = True
    return total if found else math.nan
