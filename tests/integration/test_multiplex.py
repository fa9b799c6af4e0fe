"""Model multiplexing with real processes (issue 15 items 5-7): `@serve.multiplexed` loaders
count their loads and closes as files in a directory the test reads, so what happened in
the replicas is observed from outside.

- the handle option and the HTTP header `serve_multiplexed_model_id` both reach the replica
  (`serve.get_multiplexed_model_id()`), and a request naming no model gets a clear error;
- concurrent first requests for one model load it once;
- least recently used eviction with `max_num_models_per_replica` (the evicted model's
  `aclose()` runs), counted in `serve_multiplexed_model_*` metrics;
- a steady mix of K models over R replicas with N*R >= K, after warm-up, loads nothing more,
  through handles and through the HTTP proxy (whose router learns the replicas' models only
  from the controller's replica set).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import re
import uuid
from pathlib import Path

import httpx
import pytest

import serve
from serve._data.client import ServeClient
from serve.messages import DeploymentId

from ..conftest import free_port, scrape_node_metrics, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(240)]


class _Model:
    def __init__(self, model_id: str, where: Path) -> None:
        self.model_id, self._where = model_id, where

    async def aclose(self) -> None:
        (self._where / f"close-{self.model_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()


@serve.deployment(num_replicas=2)
class Mux:
    def __init__(self, where: str) -> None:
        self.where = Path(where)

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> _Model:
        (self.where / f"load-{model_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
        await asyncio.sleep(0.2)  # a slow load (not synchronisation): concurrent first requests overlap it
        return _Model(model_id, self.where)

    async def __call__(self, request=None) -> dict:
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"model": model.model_id, "asked": serve.get_multiplexed_model_id(), "pid": os.getpid()}


def _events(where: Path, kind: str, model: str | None = None) -> list[str]:
    return sorted(p.name for p in where.iterdir() if p.name.startswith(f"{kind}-{model + '-' if model else ''}"))


@pytest.fixture
def mux(tmp_path: Path):
    port = free_port()
    serve.start(http_options={"port": port})
    handle = serve.run(Mux.bind(str(tmp_path)), name="mux", route_prefix="/mux")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        wait_until(lambda: client.get("/-/routes").json().get("/mux") == "Mux", timeout=30, what="the route")
        yield handle, client, tmp_path
    serve.shutdown()


def test_handle_option_and_header_choose_the_model(mux) -> None:
    handle, client, _ = mux
    out = handle.options(multiplexed_model_id="m1").remote().result(timeout_s=30)
    assert (out["model"], out["asked"]) == ("m1", "m1")
    r = client.get("/mux", headers={"serve_multiplexed_model_id": "m2"})
    assert r.status_code == 200, r.text
    assert (r.json()["model"], r.json()["asked"]) == ("m2", "m2")
    # No model named: the loader says what to send.
    with pytest.raises(ValueError, match="serve_multiplexed_model_id"):
        handle.remote().result(timeout_s=30)
    assert client.get("/mux").status_code == 500
    # The option is kept by method handles, and a pickled handle.
    m3 = handle.options(multiplexed_model_id="m3")
    assert m3.some_method.multiplexed_model_id == "m3"
    assert pickle.loads(pickle.dumps(m3)).remote().result(timeout_s=30)["model"] == "m3"


def test_concurrent_first_requests_load_a_model_once(mux) -> None:
    handle, _, where = mux
    h = handle.options(multiplexed_model_id="c1")
    responses = [h.remote() for _ in range(12)]
    assert {r.result(timeout_s=30)["model"] for r in responses} == {"c1"}
    assert len(_events(where, "load", "c1")) == 1


def _held_by_replicas(app: str = "mux", name: str = "Mux") -> list[tuple[str, ...]]:
    """The models each replica holds, as the driver's router received them from the controller."""
    router = ServeClient.current().router_now(DeploymentId(app, name))
    return [r.model_ids for r in router.replicas] if router is not None else []


def test_a_steady_mix_settles_with_no_more_loads(mux) -> None:
    handle, client, where = mux
    models = ["k0", "k1", "k2", "k3"]  # K=4 over R=2 replicas of N=2
    rng = random.Random(7)
    for m in models * 2:  # warm-up through the handle
        handle.options(multiplexed_model_id=m).remote().result(timeout_s=30)
    wait_until(lambda: sorted(m for held in _held_by_replicas() for m in held) == models, timeout=30,
               what="the replicas' models in the pushed replica set")
    loads = len(_events(where, "load"))
    assert loads == 4
    mix = [rng.choice(models) for _ in range(60)]
    for m in mix:
        assert handle.options(multiplexed_model_id=m).remote().result(timeout_s=30)["model"] == m
    assert len(_events(where, "load")) == loads, "the steady mix loaded models again through the handle"
    # The proxy's router knows nothing of the driver's sends: only the pushed sets.
    for m in mix:
        r = client.get("/mux", headers={"serve_multiplexed_model_id": m})
        assert r.status_code == 200 and r.json()["model"] == m
    assert len(_events(where, "load")) == loads, "the steady mix loaded models again through HTTP"
    assert _events(where, "close") == []


def _value(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name):].split("} ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def test_least_recently_used_is_evicted_and_closed(tmp_path: Path) -> None:
    handle = serve.run(Mux.options(num_replicas=1).bind(str(tmp_path)), name="lru", route_prefix=None)
    try:
        def call(m: str) -> None:
            assert handle.options(multiplexed_model_id=m).remote().result(timeout_s=30)["model"] == m

        for m in ["a", "b", "a", "c"]:  # c evicts b (a was used after b)
            call(m)
        wait_until(lambda: _events(tmp_path, "close"), timeout=10, what="the evicted model's aclose()")
        assert [n.split("-")[1] for n in _events(tmp_path, "close")] == ["b"]
        call("a")  # still held
        assert len(_events(tmp_path, "load", "a")) == 1
        call("b")  # loaded again, evicting c
        assert len(_events(tmp_path, "load", "b")) == 2
        wait_until(lambda: len(_events(tmp_path, "close")) == 2, timeout=10, what="c closed")
        assert _events(tmp_path, "close", "c")
        # Metrics: 4 loads, 2 unloads, requests per model, 2 models held.
        labels = {"deployment": "Mux", "application": "lru"}

        def counted() -> bool:
            text = scrape_node_metrics()
            return (_value(text, "serve_multiplexed_model_load_total", **labels) == 4
                    and _value(text, "serve_multiplexed_model_unload_total", **labels) == 2
                    and _value(text, "serve_multiplexed_model_requests_total", model_id="a", **labels) == 3
                    and _value(text, "serve_num_multiplexed_models", **labels) == 2
                    and _value(text, "serve_multiplexed_model_load_latency_ms_count", **labels) == 4)
        wait_until(counted, timeout=30, what="the serve_multiplexed_* metrics")
    finally:
        serve.shutdown()
