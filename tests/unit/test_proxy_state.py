"""Unit tests of the proxy state machine (`serve._control.proxy_state`) against a fake `ProxyIO`.

Contract: HeadOnly runs one proxy on the alive head node, EveryNode one per alive node,
NoServer none; nodes joining get a proxy, nodes leaving are forgotten (their proxy killed);
a proxy that fails to start is retried after a growing back-off, only once its
predecessor is gone; a HEALTHY proxy whose health check fails (it died) or hangs is
replaced at once; `stop_all` stops everything for good. No processes; time is a float.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

import pytest

from serve import HTTPOptions
from serve._control.proxy_state import (
    HEALTH_PERIOD_S,
    HEALTH_TIMEOUT_S,
    HEALTHY,
    RESTART_DELAY_S,
    STARTING,
    UNHEALTHY,
    NodeView,
    ProxyFailure,
    ProxyState,
    default_workers,
)


class _NotDone(Exception):
    pass


@dataclass(eq=False)
class FakePending:
    value: Any = None
    error: BaseException | None = None
    finished: bool = False

    def done(self) -> bool:
        return self.finished

    def result(self, timeout: float | None = None) -> Any:
        if not self.finished:
            raise _NotDone()
        if self.error is not None:
            raise self.error
        return self.value

    def succeed(self, value: Any = None) -> None:
        self.value, self.finished = value, True

    def fail(self, error: BaseException) -> None:
        self.error, self.finished = error, True


@dataclass(eq=False)
class FakeProxy:
    node: NodeView
    worker: int = 0
    reuse_port: bool = False
    killed: bool = False
    calls: list[tuple[str, FakePending]] = field(default_factory=list)

    def last(self, method: str) -> FakePending:
        return [p for m, p in self.calls if m == method][-1]


class FakeIO:
    def __init__(self) -> None:
        self.started: list[FakeProxy] = []
        self.kills: list[tuple[FakeProxy, FakePending]] = []

    def start(self, node: NodeView, http_options: Any, worker: int = 0, reuse_port: bool = False) -> FakeProxy:
        proxy = FakeProxy(node, worker=worker, reuse_port=reuse_port)
        self.started.append(proxy)
        return proxy

    def call(self, handle: FakeProxy, method: str, *args: Any) -> FakePending:
        pending = FakePending()
        handle.calls.append((method, pending))
        return pending

    def kill(self, handle: FakeProxy) -> FakePending:
        handle.killed = True
        pending = FakePending()
        self.kills.append((handle, pending))
        return pending

    def live(self) -> list[FakeProxy]:
        return [p for p in self.started if not p.killed]


# 2 cores each: one proxy per node by default (the tests of `num_workers` set it)
HEAD = NodeView("n1", "127.0.0.1", True, True, 2.0)
N2 = NodeView("n2", "127.0.0.2", True, False, 2.0)
N3 = NodeView("n3", "127.0.0.3", True, False, 2.0)


def _dead(node: NodeView) -> NodeView:
    return NodeView(node.node_id, node.ip, False, node.is_head, node.cpus)


def _ready_all(io: FakeIO) -> None:
    for p in io.live():
        ready = p.last("ready")
        if not ready.done():
            ready.succeed(f"http://{p.node.ip}:8000")


@pytest.mark.parametrize(("location", "expected"), [("HeadOnly", ["n1"]), ("EveryNode", ["n1", "n2", "n3"]),
                                                    ("NoServer", [])])
def test_location_decides_which_nodes_run_a_proxy(location: str, expected: list[str]) -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location=location), io)
    state.step(0.0, [HEAD, N2, N3])
    assert sorted(p.node.node_id for p in io.started) == expected
    assert all(e["state"] == STARTING for e in state.status().values())
    _ready_all(io)
    assert state.step(0.1, [HEAD, N2, N3]) is bool(expected)
    assert {k: (v["state"], v["url"]) for k, v in state.status().items()} == {
        n.node_id: (HEALTHY, f"http://{n.ip}:8000") for n in (HEAD, N2, N3) if n.node_id in expected}
    assert state.step(0.2, [HEAD, N2, N3]) is False  # idempotent: nothing new starts
    assert len(io.started) == len(expected)


def test_everynode_follows_nodes_joining_and_leaving() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode"), io)
    state.step(0.0, [HEAD, N2])
    _ready_all(io)
    state.step(0.1, [HEAD, N2])
    state.step(0.2, [HEAD, N2, N3])  # a node joins
    assert [p.node.node_id for p in io.started] == ["n1", "n2", "n3"]
    state.step(0.3, [HEAD, _dead(N2), N3])  # a node leaves: forgotten, not restarted
    assert sorted(state.status()) == ["n1", "n3"]
    assert [p.node.node_id for p in io.started if p.killed] == ["n2"]
    assert len(io.started) == 3


def test_headonly_waits_for_an_alive_head_node() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="HeadOnly"), io)
    state.step(0.0, [_dead(HEAD), N2])
    assert io.started == [] and state.status() == {}
    state.step(1.0, [HEAD, N2])
    assert [p.node.node_id for p in io.started] == ["n1"]


def test_a_failed_start_is_retried_with_backoff_once_the_old_proxy_is_gone() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="HeadOnly"), io)
    state.step(0.0, [HEAD])
    io.started[0].last("ready").fail(OSError(errno.EADDRINUSE, "address already in use"))
    state.step(0.1, [HEAD])
    st = state.status()["n1"]
    assert st["state"] == UNHEALTHY and "address already in use" in st["message"] and st["failures"] == 1
    assert st["failure"] == ProxyFailure.PORT_IN_USE
    assert io.started[0].killed
    state.step(5.0, [HEAD])
    assert len(io.started) == 1, "a new proxy started before the failed one was gone (its port may be held)"
    io.kills[0][1].succeed()
    state.step(5.1, [HEAD])
    assert len(io.started) == 2
    io.started[1].last("ready").fail(OSError("still in use"))
    state.step(5.2, [HEAD])
    io.kills[1][1].succeed()
    state.step(6.0, [HEAD])
    assert len(io.started) == 2, "the second retry should wait 2 s"
    state.step(7.3, [HEAD])
    assert len(io.started) == 3
    io.started[2].last("ready").succeed("http://127.0.0.1:8000")
    state.step(7.4, [HEAD])
    assert state.status()["n1"] == {"node_id": "n1", "node_ip": "127.0.0.1", "worker": 0, "state": HEALTHY,
                                    "url": "http://127.0.0.1:8000", "message": "", "failure": None, "failures": 0}


def test_a_dead_or_hung_proxy_is_replaced_at_once() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode"), io)
    state.step(0.0, [HEAD, N2])
    _ready_all(io)
    state.step(0.1, [HEAD, N2])
    t = 0.1 + HEALTH_PERIOD_S
    state.step(t, [HEAD, N2])
    head_proxy, n2_proxy = io.started
    head_proxy.last("ready").fail(RuntimeError("ActorDiedError: the proxy is dead"))
    state.step(t + 0.1, [HEAD, N2])
    assert state.status()["n1"]["state"] == UNHEALTHY and head_proxy.killed
    io.kills[-1][1].succeed()
    state.step(t + 0.2, [HEAD, N2])
    assert len(io.started) == 2, "restarted before the node table could tell whether its node died too"
    state.step(t + 0.1 + RESTART_DELAY_S, [HEAD, N2])  # no growing back-off for a proxy that was serving
    assert len(io.started) == 3 and io.started[2].node == HEAD
    # n2's health check never answers
    state.step(t + HEALTH_TIMEOUT_S + 1.0, [HEAD, N2])
    assert state.status()["n2"]["state"] == UNHEALTHY and n2_proxy.killed
    assert "health check" in state.status()["n2"]["message"]


def test_a_proxy_that_died_with_its_node_is_not_restarted() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode"), io)
    state.step(0.0, [HEAD, N2])
    _ready_all(io)
    state.step(0.1, [HEAD, N2])
    state.step(0.1 + HEALTH_PERIOD_S, [HEAD, N2])
    io.started[1].last("ready").fail(RuntimeError("ActorDiedError: node n2 stopped heartbeating"))
    state.step(0.2 + HEALTH_PERIOD_S, [HEAD, N2])
    io.kills[-1][1].succeed()
    state.step(0.5 + HEALTH_PERIOD_S, [HEAD, _dead(N2)])  # the node table catches up within the delay
    state.step(5.0 + HEALTH_PERIOD_S, [HEAD, _dead(N2)])
    assert len(io.started) == 2 and sorted(state.status()) == ["n1"]


def test_adopted_proxies_are_checked_before_counting_as_healthy() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode"), io)
    running = FakeProxy(N2)
    state.adopt(N2, running, 0.0)
    state.step(0.0, [HEAD, N2])
    assert [p.node.node_id for p in io.started] == ["n1"]  # n2 keeps the adopted proxy
    assert state.status()["n2"]["state"] == STARTING
    running.last("ready").succeed("http://127.0.0.2:8000")
    state.step(0.1, [HEAD, N2])
    assert state.status()["n2"]["state"] == HEALTHY


def test_stop_all_kills_everything_and_starts_nothing_again() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode"), io)
    state.step(0.0, [HEAD, N2, N3])
    pending = state.stop_all()
    assert len(pending) == 3 and all(p.killed for p in io.started)
    state.step(1.0, [HEAD, N2, N3])
    assert len(io.started) == 3 and state.status() == {}


def test_the_base_url_is_a_running_proxys_own_else_the_configured_one() -> None:
    from serve._api.startup import base_url

    proxies = {"b": {"node_ip": "127.0.0.2", "url": "http://127.0.0.2:9000"},
               "a": {"node_ip": "127.0.0.1", "url": "http://127.0.0.1:9000"},
               "c": {"node_ip": "127.0.0.0", "url": ""}}  # not serving: no URL
    assert base_url({"host": "node", "port": 9000, "root_path": "/s"}, proxies) == "http://127.0.0.1:9000/s"
    assert base_url({"host": "0.0.0.0", "port": 9000}, {"a": proxies["a"]}) == "http://127.0.0.1:9000"
    assert base_url({"host": "node", "port": 9000}, {}) == "http://127.0.0.1:9000"
    assert base_url({"host": "10.0.0.5", "port": 80}, None) == "http://10.0.0.5:80"
    assert base_url({"location": "NoServer"}, proxies) is None


def test_the_default_number_of_workers_can_be_pinned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZEROSERVE_PROXY_WORKERS", "3")
    assert default_workers(0, 16) == 3
    monkeypatch.setenv("ZEROSERVE_PROXY_WORKERS", "lots")  # not a whole number: the cores decide
    assert default_workers(0, 16) == 8


def test_default_workers_are_half_the_cores_from_one_to_eight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROSERVE_PROXY_WORKERS", raising=False)
    assert [default_workers(0, c) for c in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 8, 8]
    # a node declaring fewer CPUs than the machine has gets fewer; declaring more gets no more
    assert (default_workers(4, 16), default_workers(32, 4), default_workers(0.5, 8)) == (2, 2, 4)


def test_num_workers_runs_that_many_proxies_per_node_sharing_the_port() -> None:
    io = FakeIO()
    state = ProxyState(HTTPOptions(location="EveryNode", num_workers=3), io)
    state.step(0.0, [HEAD, N2])
    assert sorted((p.node.node_id, p.worker) for p in io.started) == [(n, w) for n in ("n1", "n2") for w in range(3)]
    assert all(p.reuse_port for p in io.started)
    _ready_all(io)
    state.step(0.1, [HEAD, N2])
    assert sorted(state.status()) == ["n1", "n1#1", "n1#2", "n2", "n2#1", "n2#2"]
    assert all(v["state"] == HEALTHY for v in state.status().values())
    # one worker dies: only it is replaced (the others keep serving on the port)
    victim = next(p for p in io.started if p.node is N2 and p.worker == 1)
    state.step(HEALTH_PERIOD_S + 0.2, [HEAD, N2])
    victim.last("ready").fail(RuntimeError("the proxy died"))
    state.step(HEALTH_PERIOD_S + 0.3, [HEAD, N2])
    assert victim.killed and [p for p in io.started if p.killed] == [victim]
    io.kills[-1][1].succeed()
    state.step(HEALTH_PERIOD_S + 0.3 + RESTART_DELAY_S, [HEAD, N2])
    assert (io.started[-1].node, io.started[-1].worker) == (N2, 1)
    # a node leaving takes all its workers with it
    state.step(HEALTH_PERIOD_S + 5, [HEAD, _dead(N2)])
    assert sorted(state.status()) == ["n1", "n1#1", "n1#2"]
    assert all(p.killed for p in io.started if p.node.node_id == "n2")


def test_one_worker_does_not_ask_for_a_shared_port() -> None:
    io = FakeIO()
    ProxyState(HTTPOptions(num_workers=1), io).step(0.0, [HEAD])
    assert [(p.worker, p.reuse_port) for p in io.started] == [(0, False)]
