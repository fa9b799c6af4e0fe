"""Issue 14 items 9, 10 and 11, through real processes: how a replica starts.

- 10: a replica is running only once its first health check passed; a deployment whose
  `check_health` always fails makes `serve.run` raise with that error.
- 9: `async def __init__`; sync `__init__`, `check_health` and `reconfigure` making blocking
  runtime calls (`actors.get`, `actors.get_actor`, `handle.remote().result()`) without
  deadlock; `actors.get_actor` from async code.
- 11: FastAPI/Starlette lifespan in ingress replicas (Ray 2.x's FastAPI lifespan usage, by the
  renaming rule): startup before the replica is ready, a failing startup fails the start
  with its traceback, shutdown events when the replica drains; the same for FastAPI's
  `@app.on_event("startup"/"shutdown")` handlers and a Starlette app's `lifespan=`.
"""

from __future__ import annotations

import asyncio
import warnings
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse

import actors
import serve
from serve._api.startup import running_client

from ..conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(240)

NS = "p14-start"


@pytest.fixture(scope="module")
def http():
    actors.init(num_cpus=4, namespace=NS)
    port = free_port()
    serve.start(http_options={"port": port})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    serve.shutdown()
    actors.shutdown()


def _deployment_status(app: str, name: str) -> dict:
    return running_client().status()["applications"][app]["deployments"][name]


# -- item 10: the first health check ---------------------------------------------------------


@serve.deployment(health_check_period_s=1)
class NeverHealthy:
    def check_health(self):
        raise RuntimeError("the model weights are corrupt")

    def __call__(self):
        return "unreachable"


def test_a_deployment_that_never_passes_its_health_check_fails_serve_run(http) -> None:
    with pytest.raises(serve.DeploymentUnhealthyError) as info:
        serve.run(NeverHealthy.bind(), name="never", route_prefix=None)
    assert "RuntimeError: the model weights are corrupt" in str(info.value)
    assert "check_health" in str(info.value)  # the traceback says where
    serve.delete("never")


@actors.remote
class Gate:
    def __init__(self) -> None:
        self.open = False

    def set_open(self) -> None:
        self.open = True

    def is_open(self) -> bool:
        return self.open


@serve.deployment(health_check_timeout_s=120)
class Gated:
    def __init__(self, gate) -> None:
        self.gate = gate

    async def check_health(self) -> None:
        while not await self.gate.is_open.remote():
            await asyncio.sleep(0.05)

    def __call__(self) -> str:
        return "served"


def test_a_replica_is_not_running_until_its_first_health_check_passes(http) -> None:
    gate = Gate.remote()
    handle = serve.run(Gated.bind(gate), name="gated", route_prefix=None, _wait=False)
    wait_until(lambda: "the first health check running" in _deployment_status("gated", "Gated")["progress"],
               timeout=60, what="the status to say the first health check runs")
    st = _deployment_status("gated", "Gated")
    assert st["status"] != "HEALTHY" and st["replicas"].get("RUNNING", 0) == 0
    actors.get(gate.set_open.remote())
    assert handle.remote().result(timeout_s=60) == "served"
    wait_until(lambda: _deployment_status("gated", "Gated")["status"] == "HEALTHY", timeout=30, what="HEALTHY")
    serve.delete("gated")


# -- item 9: blocking runtime calls in sync start-up code, async __init__ --------------------


@actors.remote
class Store:
    def __init__(self) -> None:
        self.reads = 0

    def get(self, key: str) -> int:
        self.reads += 1
        return {"a": 7, "b": 100}[key]


@serve.deployment
class Helper:
    def __call__(self) -> int:
        return 5


@serve.deployment(user_config={"key": "b"})
class Blocking:
    def __init__(self, helper) -> None:
        store = actors.get_actor("store", namespace=NS)  # a blocking lookup
        self.a = actors.get(store.get.remote("a"))  # a blocking get
        self.b = helper.remote().result(timeout_s=60)  # a blocking handle call
        self.store = store

    def reconfigure(self, config: dict) -> None:
        self.c = actors.get(self.store.get.remote(config["key"]))

    def check_health(self) -> None:
        actors.get(self.store.get.remote("a"), timeout=10)

    def __call__(self) -> int:
        return self.a + self.b + self.c


@serve.deployment
class AsyncInit:
    async def __init__(self, helper) -> None:
        await asyncio.sleep(0)
        store = actors.get_actor("store", namespace=NS)  # from async code
        self.a = await store.get.remote("a")
        self.b = await helper.remote()

    async def __call__(self) -> int:
        return self.a * self.b


def test_sync_start_up_code_may_block_on_runtime_calls(http) -> None:
    Store.options(name="store", namespace=NS).remote()
    handle = serve.run(Blocking.bind(Helper.bind()), name="blocking", route_prefix=None, timeout_s=120)
    assert handle.remote().result(timeout_s=60) == 7 + 5 + 100
    serve.delete("blocking")


def test_async_init(http) -> None:
    handle = serve.run(AsyncInit.bind(Helper.bind()), name="async-init", route_prefix=None, timeout_s=120)
    assert handle.remote().result(timeout_s=60) == 35
    serve.delete("async-init")


# -- item 11: FastAPI lifespan in an ingress replica (Ray 2.x usage, renamed) ------------------

fake_models: dict[str, object] = {}


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Load the model before the replica takes requests
    fake_models["answer"] = lambda x: x * 42
    yield {"loaded_by": "lifespan"}
    # Release it when the replica shuts down
    fake_models.clear()
    Path(app.state.shutdown_marker).write_text("released")


app = FastAPI(lifespan=lifespan)


@serve.deployment
@serve.ingress(app)
class MyFastAPIDeployment:
    def __init__(self, shutdown_marker: str) -> None:
        app.state.shutdown_marker = shutdown_marker

    @app.get("/predict")
    async def predict(self, x: float, request: Request):
        return {"result": fake_models["answer"](x), "loaded_by": request.state.loaded_by}


@asynccontextmanager
async def broken_lifespan(app: FastAPI):
    raise ConnectionError("cannot reach the feature store")
    yield


broken_app = FastAPI(lifespan=broken_lifespan)


@serve.deployment
@serve.ingress(broken_app)
class BrokenStartup:
    @broken_app.get("/")
    def root(self):
        return "unreachable"


def test_fastapi_lifespan_runs_before_ready_and_at_drain(http, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown"
    serve.run(MyFastAPIDeployment.bind(str(marker)), name="lifespan", route_prefix="/lifespan")
    wait_until(lambda: "/lifespan" in http.get("/-/routes").json(), timeout=30, what="the route")
    r = http.get("/lifespan/predict", params={"x": 2})
    assert r.status_code == 200, r.text
    assert r.json() == {"result": 84.0, "loaded_by": "lifespan"}
    assert not marker.exists()
    serve.delete("lifespan")
    wait_until(marker.exists, timeout=60, what="the lifespan's shutdown to run when the replica drained")
    assert marker.read_text() == "released"


def test_a_failing_lifespan_startup_fails_the_start_with_its_traceback(http) -> None:
    with pytest.raises(serve.DeploymentUnhealthyError) as info:
        serve.run(BrokenStartup.bind(), name="broken", route_prefix="/broken")
    text = str(info.value)
    assert "startup failed" in text and "ConnectionError: cannot reach the feature store" in text
    assert "Traceback" in text
    serve.delete("broken")


# FastAPI's older form: `@app.on_event("startup")` / `("shutdown")` handlers (sync or async).
events_app = FastAPI()
started_by_event: dict[str, str] = {}


def _load_on_startup() -> None:  # a sync handler
    started_by_event["model"] = "loaded by the startup event"


async def _release_on_shutdown() -> None:  # an async one
    Path(events_app.state.shutdown_marker).write_text("released by the shutdown event")


with warnings.catch_warnings():  # FastAPI deprecates on_event for lifespan=, but apps still use it
    warnings.simplefilter("ignore", DeprecationWarning)
    events_app.on_event("startup")(_load_on_startup)
    events_app.on_event("shutdown")(_release_on_shutdown)


@serve.deployment
@serve.ingress(events_app)
class OnEventDeployment:
    def __init__(self, shutdown_marker: str) -> None:
        events_app.state.shutdown_marker = shutdown_marker

    @events_app.get("/model")
    def model(self):
        return {"model": started_by_event.get("model")}


def test_fastapi_on_event_startup_and_shutdown_run_in_the_replica(http, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown"
    serve.run(OnEventDeployment.bind(str(marker)), name="on-event", route_prefix="/on-event")
    wait_until(lambda: "/on-event" in http.get("/-/routes").json(), timeout=30, what="the route")
    r = http.get("/on-event/model")  # the first request: startup ran before the replica was ready
    assert (r.status_code, r.json()) == (200, {"model": "loaded by the startup event"}), r.text
    assert not marker.exists()
    serve.delete("on-event")
    wait_until(marker.exists, timeout=60, what="the shutdown event to run when the replica drained")
    assert marker.read_text() == "released by the shutdown event"


# A Starlette app (not FastAPI) with `lifespan=`: its state reaches each request too.
@asynccontextmanager
async def starlette_lifespan(app: Starlette):
    yield {"tokenizer": "loaded by the starlette lifespan"}
    Path(app.state.shutdown_marker).write_text("closed by the starlette lifespan")


starlette_app = Starlette(lifespan=starlette_lifespan)


@serve.deployment
@serve.ingress(starlette_app)
class StarletteLifespanDeployment:
    def __init__(self, shutdown_marker: str) -> None:
        starlette_app.state.shutdown_marker = shutdown_marker

    async def tokenizer(self, request):
        return JSONResponse({"tokenizer": request.state.tokenizer})

    starlette_app.add_route("/tokenizer", tokenizer)


def test_starlette_lifespan_runs_before_ready_and_at_drain(http, tmp_path: Path) -> None:
    marker = tmp_path / "shutdown"
    serve.run(StarletteLifespanDeployment.bind(str(marker)), name="st-lifespan", route_prefix="/st-lifespan")
    wait_until(lambda: "/st-lifespan" in http.get("/-/routes").json(), timeout=30, what="the route")
    r = http.get("/st-lifespan/tokenizer")
    assert (r.status_code, r.json()) == (200, {"tokenizer": "loaded by the starlette lifespan"}), r.text
    assert not marker.exists()
    serve.delete("st-lifespan")
    wait_until(marker.exists, timeout=60, what="the starlette lifespan's exit to run when the replica drained")
    assert marker.read_text() == "closed by the starlette lifespan"
