"""Serve's metric families and the user metrics (`serve.metrics`), read from the process's
registry as its node's endpoint reads it; request ids. No processes."""

from __future__ import annotations

import random
import re

import pytest
from prometheus_client import generate_latest

from actors.system import metrics_registry
from proxy import REQUEST_ID_HEADER, new_request_id, request_id_of
from serve import metrics
from serve._data import context
from serve._data.counting import LATENCY_BUCKETS_MS, SORT_FROM, Counter, GaugeFunc, Histogram


def _scrape() -> str:
    return generate_latest(metrics_registry()).decode()


def _sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


def test_counters_and_histograms_render_with_their_labels_and_cumulative_buckets() -> None:
    c = Counter("test_obs_requests", "Requests.", ("route", "status"))
    cell = c.cell("/a", "200")
    cell.value += 3
    h = Histogram("test_obs_latency_ms", "Latency.", ("route",), bounds=(1, 10))
    hc = h.cell("/a")
    for v in (0.5, 1.0, 5, 50):
        hc.observe(v)
    text = _scrape()
    assert _sample(text, "test_obs_requests_total", route="/a", status="200") == 3.0
    assert _sample(text, "test_obs_latency_ms_bucket", route="/a", le="1.0") == 2.0  # le is inclusive
    assert _sample(text, "test_obs_latency_ms_bucket", route="/a", le="10.0") == 3.0
    assert _sample(text, "test_obs_latency_ms_bucket", route="/a", le="+Inf") == 4.0
    assert _sample(text, "test_obs_latency_ms_count", route="/a") == 4.0
    assert _sample(text, "test_obs_latency_ms_sum", route="/a") == 56.5
    with pytest.raises(ValueError, match="has labels"):
        c.cell("/a")


def test_observing_a_batch_counts_as_observing_each() -> None:
    h = Histogram("test_obs_batch_ms", "Latency.", ("how",), bounds=(1, 10))
    values = [0.5, 1.0, 5, 50, 10, 0.0]
    one, batch = h.cell("one"), h.cell("batch")
    for v in values:
        one.observe(v)
    batch.observe_all(values[:2])
    batch.observe_all(values[2:])
    assert (batch.counts, batch.sum) == (one.counts, one.sum) == ([3, 2, 1], 66.5)


def test_a_long_batch_is_counted_as_observing_each() -> None:
    """A batch of SORT_FROM or more is counted by sorting it: the same counts, bounds inclusive."""
    bounds = LATENCY_BUCKETS_MS
    rng = random.Random(7)
    values = [rng.choice(bounds) for _ in range(300)] + [rng.uniform(0, 70000) for _ in range(3000)]
    values += [rng.expovariate(2.0) for _ in range(3000)] + [0.0, bounds[-1] + 1]
    rng.shuffle(values)
    assert SORT_FROM <= 700
    h = Histogram("test_obs_long_batch_ms", "Latency.", ("how",), bounds=bounds)
    one, batch = h.cell("one"), h.cell("batch")
    for v in values:
        one.observe(v)
    for start in range(0, len(values), 700):  # batches long enough to be sorted (a copy: the caller's stays as it was)
        chunk = values[start:start + 700]
        batch.observe_all(chunk)
        assert chunk == values[start:start + 700]
    assert batch.counts == one.counts and sum(one.counts) == len(values)
    assert batch.sum == pytest.approx(one.sum)


def test_a_gauge_func_reads_its_live_sources_at_scrape_time() -> None:
    class Source:
        def __init__(self, n: int) -> None:
            self.n = n

        def metric_rows(self, name: str) -> list:
            return [((f"s{self.n}",), float(self.n))]

    g = GaugeFunc("test_obs_queued", "Queued.", ("who",))
    a, b = Source(1), Source(2)
    g.add_source(a)
    g.add_source(b)
    assert _sample(_scrape(), "test_obs_queued", who="s2") == 2.0
    del b  # a source that is gone is forgotten
    text = _scrape()
    assert _sample(text, "test_obs_queued", who="s1") == 1.0 and _sample(text, "test_obs_queued", who="s2") is None


def test_user_metrics_outside_a_replica() -> None:
    counter = metrics.Counter("test_user_hits", description="Hits.", tag_keys=("model",))
    counter.set_default_tags({"model": "v1"})
    counter.inc()
    counter.inc(2, tags={"model": "v2"})
    gauge = metrics.Gauge("test_user_temp", tag_keys=("room",))
    gauge.set(21.5, tags={"room": "a"})
    hist = metrics.Histogram("test_user_size", boundaries=[1, 10], tag_keys=())
    hist.observe(3)
    text = _scrape()
    assert _sample(text, "test_user_hits_total", model="v1") == 1.0
    assert _sample(text, "test_user_hits_total", model="v2") == 2.0
    assert _sample(text, "test_user_temp", room="a") == 21.5
    assert _sample(text, "test_user_size_bucket", le="10.0") == 1.0
    again = metrics.Counter("test_user_hits", tag_keys=("model",))  # made again: the same metric
    again.inc(tags={"model": "v1"})
    assert _sample(_scrape(), "test_user_hits_total", model="v1") == 2.0


def test_user_metrics_in_a_replica_get_its_tags_and_the_request_route() -> None:
    context.set_process_context(context.ReplicaContext("Model", "ab12", "app"))
    try:
        counter = metrics.Counter("test_replica_hits", tag_keys=("route",))
        token = context.current_request.set(("r1", "/model", "app", "", ""))
        try:
            counter.inc()
        finally:
            context.current_request.reset(token)
        assert _sample(_scrape(), "test_replica_hits_total", deployment="Model", replica="app#Model#ab12",
                       application="app", route="/model") == 1.0
        with pytest.raises(ValueError, match="reserved for Serve"):
            metrics.Gauge("test_replica_bad", tag_keys=("replica",))
    finally:
        context.set_process_context(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(("make", "error", "match"), [
    (lambda: metrics.Counter("bad name"), ValueError, "metric name must match"),
    (lambda: metrics.Counter("ok_name_1", tag_keys="model"), TypeError, "tuple of strings"),
    (lambda: metrics.Counter("ok_name_2", tag_keys=("a", "a")), ValueError, "repeat"),
    (lambda: metrics.Histogram("ok_name_3"), ValueError, "needs boundaries"),
    (lambda: metrics.Histogram("ok_name_4", boundaries=[5, 1]), ValueError, "must increase"),
    (lambda: metrics.Histogram("ok_name_5", boundaries=[0, 1]), ValueError, "> 0"),
    (lambda: metrics.Gauge("test_user_hits"), ValueError, "already exists"),
])
def test_user_metric_mistakes_fail_at_once(make, error, match) -> None:
    with pytest.raises(error, match=match):
        make()


def test_user_metric_updates_are_checked() -> None:
    c = metrics.Counter("test_user_checked", tag_keys=("a", "b"))
    with pytest.raises(ValueError, match=r"needs a value for tag\(s\) \['b'\]"):
        c.inc(tags={"a": "1"})
    with pytest.raises(ValueError, match="are not tag_keys"):
        c.inc(tags={"a": "1", "b": "2", "c": "3"})
    with pytest.raises(ValueError, match="can only go up"):
        c.inc(-1, tags={"a": "1", "b": "2"})
    with pytest.raises(ValueError, match="are not tag_keys"):
        c.set_default_tags({"z": "1"})


def test_request_ids_take_the_clients_sane_one_else_a_new_one() -> None:
    def rid(value: bytes | None) -> str:
        headers = [(b"host", b"x")] + ([(REQUEST_ID_HEADER, value)] if value is not None else [])
        return request_id_of(headers)

    assert rid(b"abc-123_XYZ.~") == "abc-123_XYZ.~"
    assert rid(b"x" * 128) == "x" * 128
    for bad in (b"x" * 129, b"", b"has space", b"tab\there", b"\xff\xfe", b"new\nline"):
        made = rid(bad)
        assert made != bad.decode("latin-1") and re.fullmatch(r"[0-9a-z]+", made)
    ids = {new_request_id() for _ in range(1000)} | {context.new_request_id() for _ in range(1000)}
    assert len(ids) == 2000


def test_a_forked_process_makes_request_ids_of_its_own() -> None:
    """A node's fork server imports these modules once and forks every proxy and replica
    from that: a child must not repeat its parent's (or a sibling's) ids."""
    import os

    ours = {new_request_id(), context.new_request_id()}
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its first ids and leave at once
        os.write(write, f"{new_request_id()} {context.new_request_id()}".encode())
        os._exit(0)
    os.close(write)
    theirs = set(os.read(read, 4096).decode().split())
    os.close(read)
    os.waitpid(pid, 0)
    assert len(theirs) == 2 and not theirs & ours
    assert {i[:11] for i in theirs}.isdisjoint({i[:11] for i in ours}), (ours, theirs)
