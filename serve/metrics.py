"""User metrics: `serve.metrics.Counter`, `Gauge` and `Histogram`, as Ray's `ray.serve.metrics`.

    from serve import metrics

    @serve.deployment
    class Model:
        def __init__(self):
            self.hits = metrics.Counter("model_hits", description="Cache hits.", tag_keys=("model",))
            self.hits.set_default_tags({"model": "v1"})

        def __call__(self, x):
            self.hits.inc()                       # or .inc(2, tags={"model": "v2"})

A metric made inside a replica is tagged with its `deployment`, `replica` and `application`
(those tag names are reserved there); a `route` tag, when declared in `tag_keys` and not
given, is the current request's route. Values go to this process's Prometheus registry
(`actors.system.metrics_registry()`), which the node's metrics endpoint serves; counters
are exported with the `_total` suffix. A metric's name may be made again (in the same
process) with the same kind and tags: both objects then feed one metric.

Invariants: every mistake raises at the call that made it, saying what to change (a tag
key not declared, a declared one without a value, a counter decremented, boundaries not
increasing); updates are thread-safe (sync deployment methods run on threads) and a
label set's child is looked up once and cached.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import prometheus_client

from ._data.context import ROUTE, current_request, process_context

__all__ = ["Counter", "Gauge", "Histogram"]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_TAG = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED = ("deployment", "replica", "application")
_made: dict[str, tuple[type, tuple[str, ...], Any]] = {}  # name -> (kind, label names, prometheus metric)
_lock = threading.Lock()


class _Metric:
    _kind: type = prometheus_client.Counter

    def __init__(self, name: str, description: str = "", tag_keys: Sequence[str] | None = None,
                 **kwargs: Any) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"a metric name must match [a-zA-Z_:][a-zA-Z0-9_:]* (letters, digits, '_' and ':'), "
                             f"got {name!r}")
        if not isinstance(description, str):
            raise TypeError(f"description must be a string, got {type(description).__name__}")
        if isinstance(tag_keys, str) or (tag_keys is not None and not isinstance(tag_keys, (tuple, list))):
            raise TypeError(f"tag_keys must be a tuple of strings such as ('model',), got {tag_keys!r}")
        keys = tuple(tag_keys or ())
        for key in keys:
            if not isinstance(key, str) or not _TAG.match(key) or key.startswith("__"):
                raise ValueError(f"tag key {key!r} of metric {name!r} must be a name made of letters, digits and '_'")
        if len(set(keys)) != len(keys):
            raise ValueError(f"tag_keys of metric {name!r} repeat a key: {keys}")
        replica = process_context()
        self._serve_tags: dict[str, str] = {}
        if replica is not None:
            taken = [k for k in keys if k in _RESERVED]
            if taken:
                raise ValueError(f"tag key(s) {taken} of metric {name!r} are reserved for Serve: a metric made in a "
                                 f"replica is tagged with its {', '.join(_RESERVED)} automatically")
            self._serve_tags = {"deployment": replica.deployment, "replica": replica.replica_id,
                                "application": replica.app_name}
        self.name = name
        self.description = description
        self._tag_keys = keys
        self._labels = (*self._serve_tags, *keys)
        self._metric = self._register(name, description, kwargs)
        self._defaults: dict[str, str] = {}
        self._children: dict[tuple[str, ...], Any] = {}
        self._default_key: tuple[str, ...] | None = self._key({})

    @property
    def tag_keys(self) -> tuple[str, ...]:
        return self._tag_keys

    def _register(self, name: str, description: str, kwargs: dict[str, Any]) -> Any:
        from actors.system import metrics_registry

        with _lock:
            made = _made.get(name)
            if made is not None:
                kind, labels, metric = made
                if kind is not type(self) or labels != self._labels:
                    raise ValueError(f"a metric named {name!r} already exists in this process as a {kind.__name__} "
                                     f"with tags {labels}; give this one another name")
                return metric
            metric = self._kind(name, description or name, labelnames=self._labels, registry=metrics_registry(),
                                **kwargs)
            _made[name] = (type(self), self._labels, metric)
            return metric

    def set_default_tags(self, default_tags: Mapping[str, Any]) -> _Metric:
        """Values for tags not given at each update (keys among `tag_keys`)."""
        if not isinstance(default_tags, Mapping):
            raise TypeError(f"default_tags must be a dict, got {type(default_tags).__name__}")
        unknown = [k for k in default_tags if k not in self._tag_keys]
        if unknown:
            raise ValueError(f"default tag(s) {unknown} are not tag_keys of metric {self.name!r} {self._tag_keys}")
        self._defaults = {k: str(v) for k, v in default_tags.items()}
        self._default_key = self._key({})
        return self

    def _key(self, tags: Mapping[str, Any]) -> tuple[str, ...] | None:
        """The label values for `tags` over the defaults; None if some tag has no value."""
        values = []
        for key in self._tag_keys:
            if key in tags:
                values.append(str(tags[key]))
            elif key in self._defaults:
                values.append(self._defaults[key])
            else:
                return None
        return (*self._serve_tags.values(), *values)

    def _child(self, tags: Mapping[str, Any] | None) -> Any:
        if tags is None and self._default_key is not None:
            key = self._default_key
        else:
            if tags is not None and not isinstance(tags, Mapping):
                raise TypeError(f"tags must be a dict, got {type(tags).__name__}")
            tags = dict(tags or {})
            unknown = [k for k in tags if k not in self._tag_keys]
            if unknown:
                raise ValueError(f"tag(s) {unknown} are not tag_keys of metric {self.name!r} {self._tag_keys}")
            if "route" in self._tag_keys and "route" not in tags and "route" not in self._defaults:
                tags["route"] = current_request.get()[ROUTE]
            found = self._key(tags)
            if found is None:
                missing = [k for k in self._tag_keys if k not in tags and k not in self._defaults]
                raise ValueError(f"metric {self.name!r} needs a value for tag(s) {missing}: pass tags={{...}} or "
                                 "set_default_tags(...)")
            key = found
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(*key) if self._labels else self._metric
        return child


class Counter(_Metric):
    """A cumulative count (Prometheus counter, exported as `<name>_total`)."""

    def inc(self, value: float = 1.0, tags: Mapping[str, Any] | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"counter {self.name!r} can only go up: inc(value) needs a number > 0, got {value!r}")
        self._child(tags).inc(value)


class Gauge(_Metric):
    """A value that goes up and down (Prometheus gauge)."""

    _kind = prometheus_client.Gauge

    def set(self, value: float, tags: Mapping[str, Any] | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"gauge {self.name!r}: set(value) needs a number, got {value!r}")
        self._child(tags).set(value)


class Histogram(_Metric):
    """Observations counted in buckets (Prometheus histogram); `boundaries` are the buckets'
    upper bounds, increasing and > 0."""

    _kind = prometheus_client.Histogram

    def __init__(self, name: str, description: str = "", boundaries: Sequence[float] | None = None,
                 tag_keys: Sequence[str] | None = None) -> None:
        if not boundaries or isinstance(boundaries, str):
            raise ValueError(f"histogram {name!r} needs boundaries: a list of bucket bounds such as [1, 5, 10]")
        bounds = list(boundaries)
        if any(isinstance(b, bool) or not isinstance(b, (int, float)) or not b > 0 for b in bounds):
            raise ValueError(f"histogram {name!r}: boundaries must be numbers > 0, got {bounds}")
        if any(a >= b for a, b in itertools.pairwise(bounds)):
            raise ValueError(f"histogram {name!r}: boundaries must increase, got {bounds}")
        self.boundaries = bounds
        super().__init__(name, description, tag_keys, buckets=bounds)

    def observe(self, value: float, tags: Mapping[str, Any] | None = None) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"histogram {self.name!r}: observe(value) needs a number, got {value!r}")
        self._child(tags).observe(value)
