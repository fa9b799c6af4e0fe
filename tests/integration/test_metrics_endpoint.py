"""The node's metrics endpoint on an embedded cluster: every local process's registry,
told apart by `component`/`pid`; the runtime's own `actors_*` families; a process that
is slow is skipped, one that died is gone; a scrape of ~20 processes is fast; `zeroserve
status` finds the embedded cluster and shows the endpoint."""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import actors
from actors.system import local_cluster, metrics_registry, sample_value

from ..conftest import wait_until, zeroserve

pytestmark = pytest.mark.timeout(180)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return r.read().decode()


@pytest.fixture(scope="module")
def url(cluster) -> str:
    lc = local_cluster()
    assert lc is not None and lc.metrics_url.startswith("http://127.0.0.1:")
    return lc.metrics_url


@actors.remote
class Metered:
    def __init__(self, name: str) -> None:
        from prometheus_client import Counter

        self.counter = Counter(name, "a counter registered by user code in an actor", ["color"],
                               registry=metrics_registry())

    def bump(self, n: int) -> int:
        self.counter.labels("blue").inc(n)
        return os.getpid()

    async def block(self, flag: str, seconds: float) -> None:
        Path(flag).touch()
        time.sleep(seconds)  # holds this actor's event loop: it cannot answer a scrape

    def ping(self) -> int:
        return os.getpid()


def test_the_endpoint_shows_every_local_process_with_its_labels(url) -> None:
    a = Metered.options(log_name="meter_one").remote("test_user_widgets")
    pid = actors.get(a.bump.remote(5))
    text = wait_until(lambda: (t := scrape(url)) and f'pid="{pid}"' in t and t, timeout=15, what="the actor's metrics")
    lc = local_cluster()
    assert lc is not None
    pids = lc.pids()
    assert sample_value(text, "test_user_widgets_total", color="blue", pid=str(pid), component="meter") == 5
    for component, p in (("head", pids["head"]), ("agent", pids["agent"]), ("driver", os.getpid())):
        assert sample_value(text, "actors_calls_total", component=component, pid=str(p)) > 0, component
    assert sample_value(text, "actors_bytes_total", component="head", direction="received") > 0
    assert sample_value(text, "actors_actors", component="head", state="ALIVE") >= 1
    assert sample_value(text, "process_resident_memory_bytes", pid=str(pid)) > 0
    assert sample_value(text, "actors_scrape_processes", result="skipped") == 0
    # one family per name, whatever the number of processes
    assert text.count("# TYPE actors_calls_total counter") == 1
    actors.kill(a)


def test_actor_calls_are_counted_on_both_sides(url) -> None:
    a = Metered.remote("test_calls_widgets")
    pid = actors.get(a.ping.remote())
    before = scrape(url)
    n = 50
    actors.get([a.ping.remote() for _ in range(n)])

    def moved() -> str | None:
        text = scrape(url)
        got = (sample_value(text, "actors_calls_total", pid=str(pid), direction="received", kind="actor")
               - sample_value(before, "actors_calls_total", pid=str(pid), direction="received", kind="actor"))
        return text if got >= n else None

    after = wait_until(moved, timeout=15, what=f"{n} calls counted at the actor")
    sent = (sample_value(after, "actors_calls_total", pid=str(os.getpid()), direction="sent", kind="actor")
            - sample_value(before, "actors_calls_total", pid=str(os.getpid()), direction="sent", kind="actor"))
    assert sent >= n
    actors.kill(a)


def test_an_actor_that_died_is_gone_from_the_next_scrape(url) -> None:
    a = Metered.remote("test_dead_widgets")
    pid = actors.get(a.bump.remote(1))
    wait_until(lambda: f'pid="{pid}"' in scrape(url), timeout=15, what="the actor in the scrape")
    os.kill(pid, 9)
    wait_until(lambda: f'pid="{pid}"' not in scrape(url), timeout=15, what="the dead actor gone from the scrape")


def test_a_process_that_does_not_answer_is_skipped_without_holding_the_scrape(url, tmp_path: Path) -> None:
    slow, other = Metered.remote("test_slow_widgets"), Metered.remote("test_other_widgets")
    slow_pid, other_pid = actors.get([slow.ping.remote(), other.ping.remote()])
    flag = tmp_path / "blocking"
    slow.block.remote(str(flag), 6.0)
    wait_until(flag.exists, timeout=15, what="the actor to block its loop")
    t0 = time.monotonic()
    text = scrape(url)
    elapsed = time.monotonic() - t0
    assert elapsed < 3.0, f"the scrape waited {elapsed:.2f}s for a process that does not answer"
    assert f'pid="{slow_pid}"' not in text and f'pid="{other_pid}"' in text
    assert sample_value(text, "actors_scrape_processes", result="skipped") >= 1
    wait_until(lambda: f'pid="{slow_pid}"' in scrape(url), timeout=20, what="the slow actor back once it answers")
    actors.kill(slow)
    actors.kill(other)


def test_a_scrape_of_twenty_processes_takes_well_under_a_second(url) -> None:
    many = [Metered.remote(f"test_many_{i}") for i in range(17)]  # + head, agent, this driver: 20
    pids = actors.get([m.bump.remote(1) for m in many])
    wait_until(lambda: all(f'pid="{p}"' in scrape(url) for p in pids), timeout=30, what="all actors scraped")
    times = []
    for _ in range(5):
        t0 = time.monotonic()
        text = scrape(url)
        times.append(time.monotonic() - t0)
    assert sample_value(text, "actors_scrape_processes", result="answered") >= 20
    median = statistics.median(times)
    print(f"scrape of {int(sample_value(text, 'actors_scrape_processes', result='answered'))} processes: "
          f"median {median * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert median < 1.0
    for m in many:
        actors.kill(m)


def test_only_metrics_are_served(url) -> None:
    base = url.removesuffix("/metrics")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/other", timeout=5)
    assert e.value.code == 404
    req = urllib.request.Request(url, method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405


def test_status_finds_the_embedded_cluster_and_shows_its_metrics_url(url) -> None:
    data = json.loads(zeroserve("status", "--json").stdout)
    assert [n["metrics_url"] for n in data["nodes"]] == [url]
    assert url in zeroserve("status").stdout
    assert [n["metrics_url"] for n in actors.nodes()] == [url]


def test_sample_value_reads_sums_and_misses() -> None:
    text = 'x_total{a="1",b="2"} 3.0\nx_total{a="1",b="3"} 4.0\n'
    assert sample_value(text, "x_total", a="1") == 7
    assert math.isnan(sample_value(text, "x_total", a="2"))
