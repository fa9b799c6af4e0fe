"""Unit tests of metric families across processes (`actors._metrics_export`), the
runtime's counters collector and the head's collector.

Contract: a process's registry becomes plain tuples and back; merging several processes
gives one family per name, each sample with its process's labels unless it has its own
label of that name; a family of another type under a taken name, and a sample another
process already gave, are left out; the result renders as valid Prometheus text that
parses back to the same values.
"""

from __future__ import annotations

import math
import pickle

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.parser import text_string_to_metric_families

from actors._metrics_export import families_of, merge_families, render, sample_value
from actors._metrics_runtime import RuntimeCollector, RuntimeCounters
from actors.messages import ActorId, ActorOptions, ActorSpec, NodeId
from cluster._actor_table import ActorTable
from cluster._head_metrics import HeadCollector


def _registry(counter_value: float = 3, *, with_pid_label: bool = False) -> CollectorRegistry:
    r = CollectorRegistry()
    labels = ["deployment", "pid"] if with_pid_label else ["deployment"]
    c = Counter("serve_requests", "Requests", labels, registry=r)
    c.labels(*(["Model", "own"] if with_pid_label else ["Model"])).inc(counter_value)
    Histogram("serve_latency_ms", "Latency", buckets=(1, 10, 100), registry=r).observe(5)
    return r


def _parse(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_families_are_plain_picklable_tuples() -> None:
    fams = families_of(_registry())
    assert pickle.loads(pickle.dumps(fams)) == fams
    names = {f[0]: f[1] for f in fams}
    assert names == {"serve_requests": "counter", "serve_latency_ms": "histogram"}


def test_merge_gives_one_family_per_name_with_each_process_labelled() -> None:
    a, b = families_of(_registry(3)), families_of(_registry(4))
    text = render(merge_families([({"component": "replica", "pid": "10"}, a),
                                  ({"component": "replica", "pid": "11"}, b)])).decode()
    assert text.count("# TYPE serve_requests_total counter") == 1
    assert text.count("# TYPE serve_latency_ms histogram") == 1
    assert sample_value(text, "serve_requests_total", pid="10", deployment="Model") == 3
    assert sample_value(text, "serve_requests_total", pid="11", deployment="Model") == 4
    assert sample_value(text, "serve_requests_total", component="replica") == 7
    # histograms keep their buckets, per process
    assert sample_value(text, "serve_latency_ms_bucket", pid="10", le="10.0") == 1
    assert sample_value(text, "serve_latency_ms_bucket", pid="11", le="1.0") == 0
    assert sample_value(text, "serve_latency_ms_count") == 2
    parsed = _parse(text)
    assert {"serve_requests", "serve_latency_ms"} <= set(parsed)


def test_a_samples_own_label_wins_over_the_process_label() -> None:
    fams = families_of(_registry(with_pid_label=True))
    text = render(merge_families([({"component": "replica", "pid": "10"}, fams)])).decode()
    assert sample_value(text, "serve_requests_total", pid="own", component="replica") == 3
    assert math.isnan(sample_value(text, "serve_requests_total", pid="10"))


def test_a_family_of_another_type_under_a_taken_name_is_left_out() -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("clash", "a counter", registry=first).inc(2)
    Gauge("clash", "a gauge", registry=second).set(9)
    text = render(merge_families([({"pid": "1"}, families_of(first)), ({"pid": "2"}, families_of(second))])).decode()
    assert sample_value(text, "clash_total", pid="1") == 2
    assert 'pid="2"' not in text
    _parse(text)  # still valid


def test_a_sample_another_process_already_gave_is_left_out() -> None:
    fams = families_of(_registry(3))
    text = render(merge_families([({}, fams), ({}, fams)])).decode()  # no labels tell them apart
    assert sample_value(text, "serve_requests_total") == 3
    lines = [ln for ln in text.splitlines() if ln.startswith("serve_requests_total")]
    assert len(lines) == 1


def test_the_runtime_collector_reads_its_counters_at_collect_time() -> None:
    counters = RuntimeCounters()
    registry = CollectorRegistry()
    registry.register(RuntimeCollector(counters))
    counters.actor_calls_sent += 5
    counters.system_calls_received += 2
    counters.bytes_sent += 100
    text = render(merge_families([({"pid": "1"}, families_of(registry))])).decode()
    assert sample_value(text, "actors_calls_total", direction="sent", kind="actor") == 5
    assert sample_value(text, "actors_calls_total", direction="received", kind="system") == 2
    assert sample_value(text, "actors_calls_total", direction="received", kind="actor") == 0
    assert sample_value(text, "actors_bytes_total", direction="sent") == 100
    counters.actor_calls_sent += 1
    assert sample_value(render(merge_families([({}, families_of(registry))])).decode(), "actors_calls_total",
                        direction="sent", kind="actor") == 6


class _Head:
    def __init__(self) -> None:
        self.actors = ActorTable()


def _spec(max_restarts: int) -> ActorSpec:
    return ActorSpec(ActorId.new(), "Counter", "tests.fake", b"", ActorOptions(max_restarts=max_restarts),
                     "tcp://127.0.0.1:5000", None, ("incr",))


def test_the_head_collector_counts_actors_by_state_and_restarts() -> None:
    head = _Head()
    registry = CollectorRegistry()
    registry.register(HeadCollector(head))
    one, two = _spec(1), _spec(0)
    for spec in (one, two):
        head.actors.add(spec, "default")
        assert head.actors.started(spec.actor_id, 0, "tcp://x:1", 1, NodeId("n1"))
    head.actors.exited(one.actor_id, 0, "killed")  # restarts (1 left)
    head.actors.exited(two.actor_id, 0, "killed")  # dies
    text = render(merge_families([({}, families_of(registry))])).decode()
    assert sample_value(text, "actors_actors", state="RESTARTING") == 1
    assert sample_value(text, "actors_actors", state="DEAD") == 1
    assert sample_value(text, "actors_actors", state="ALIVE") == 0
    assert sample_value(text, "actors_actor_restarts_total") == 1
