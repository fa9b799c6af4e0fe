"""Serve core against a real embedded cluster: the 1.x and 2.x APIs, options, versions,
user_config, failures, back-pressure, composition."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import actors
import serve
from serve.messages import DeploymentId

from ..conftest import wait_until

pytestmark = [pytest.mark.usefixtures("cluster", "fresh_serve"), pytest.mark.timeout(120)]


# -- Ray Serve 1.x "Key Concepts", ported by renaming imports -----------------------------
@serve.deployment
class MyFirstDeployment:
    # Take the message to return as an argument to the constructor.
    def __init__(self, msg):
        self.msg = msg

    def __call__(self, request):
        return self.msg

    def other_method(self, arg):
        return self.msg + arg


def test_key_concepts_deploy_and_handle() -> None:
    MyFirstDeployment.deploy("Hello world!")
    handle = MyFirstDeployment.get_handle()
    assert actors.get(handle.remote(None)) == "Hello world!"
    assert actors.get(handle.other_method.remote("!")) == "Hello world!!"
    assert actors.get(handle.options(method_name="other_method").remote("?")) == "Hello world!?"


# -- Ray Serve 1.x "Core API" -------------------------------------------------------------
@serve.deployment
class Counter:
    def __init__(self):
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        return {"count": self.count}

    def pid(self):
        return os.getpid()


def test_core_api_lifecycle() -> None:
    serve.start()
    Counter.deploy()
    assert set(serve.list_deployments()) == {"Counter"}
    assert repr(serve.get_deployment("Counter")) == "Deployment(name=Counter,version=None,route_prefix=/Counter)"
    handle = Counter.get_handle()
    assert actors.get(handle.remote()) == {"count": 1}
    Counter.options(num_replicas=3).deploy()
    pids = {actors.get(handle.pid.remote()) for _ in range(60)}
    assert len(pids) == 3
    assert serve.status()["applications"]["default"]["deployments"]["Counter"]["replicas"] == {"RUNNING": 3}
    Counter.delete()
    assert serve.list_deployments() == {}
    with pytest.raises(KeyError, match="no deployment named 'Counter'"):
        serve.get_deployment("Counter")


def test_function_deployments_and_route_prefix_default() -> None:
    @serve.deployment(route_prefix="/hello")
    def hello(name):
        return f"hello {name}"

    handle = serve.run(hello.bind())
    assert handle.remote("ray").result() == "hello ray"
    assert hello.route_prefix == "/hello"
    assert MyFirstDeployment.route_prefix == "/MyFirstDeployment"


def test_versions_redeploy_is_a_noop_and_new_version_rolls() -> None:
    v1 = Counter.options(version="1", num_replicas=2)
    v1.deploy()
    handle = Counter.get_handle()
    before = {actors.get(handle.pid.remote()) for _ in range(40)}
    v1.deploy()  # same version: nothing restarts
    assert {actors.get(handle.pid.remote()) for _ in range(40)} == before
    Counter.options(version="2", num_replicas=2).deploy()
    after = {actors.get(handle.pid.remote()) for _ in range(40)}
    assert len(after) == 2 and not (after & before)


@serve.deployment(user_config={"factor": 2})
class Scaler:
    def __init__(self):
        self.factor = None

    def reconfigure(self, config):
        self.factor = config["factor"]

    def __call__(self, x):
        return x * self.factor

    def pid(self):
        return os.getpid()


def test_user_config_reconfigures_without_restart() -> None:
    handle = serve.run(Scaler.options(version="a").bind())
    assert handle.remote(5).result() == 10
    pid = handle.pid.remote().result()
    serve.run(Scaler.options(version="a", user_config={"factor": 3}).bind())
    wait_until(lambda: handle.remote(5).result() == 15, timeout=10, what="the new user_config to apply")
    assert handle.pid.remote().result() == pid


def test_constructor_error_makes_deploy_fail_with_the_error() -> None:
    @serve.deployment
    class Broken:
        def __init__(self):
            raise ValueError("model file missing")

    with pytest.raises(serve.DeploymentUnhealthyError, match="model file missing"):
        serve.run(Broken.bind())
    st = serve.status()["applications"]["default"]["deployments"]["Broken"]
    assert st["status"] == "UNHEALTHY" and "model file missing" in st["message"]


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"route_prefix": "api"}, ValueError, "must be None or a string starting with '/'"),
        ({"num_replicas": 2, "autoscaling_config": {"max_replicas": 3}}, ValueError, "not both"),
        ({"replicas": 2}, TypeError, "unknown deployment option"),
        ({"max_ongoing_requests": 0}, ValueError, "max_ongoing_requests must be an integer >= 1"),
        ({"max_concurrent_queries": 5, "max_ongoing_requests": 6}, ValueError, "old name of max_ongoing_requests"),
        ({"actor_options": {"cpus": 1}}, ValueError, "unknown actor_options"),
        ({"max_queued_requests": -5}, ValueError, "max_queued_requests must be -1"),
        ({"actor_options": {"num_gpus": 1.5}}, ValueError, "fraction of one device"),
        ({"actor_options": {"runtime_env": {}}}, ValueError, "unknown actor_options"),
    ],
)
def test_wrong_options_fail_at_the_call(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        serve.deployment(**options)
    with pytest.raises(error, match=message):
        Counter.options(**options)


def test_old_option_names_are_accepted() -> None:
    d = Counter.options(max_concurrent_queries=7, ray_actor_options={"num_cpus": 0.1, "num_gpus": 0})
    assert d.max_ongoing_requests == 7 and d.actor_options == {"num_cpus": 0.1}


# -- 2.x style: bind, run, composition, responses --------------------------------------
@serve.deployment
class Adder:
    def __init__(self, n):
        self.n = n

    def __call__(self, x):
        return x + self.n


@serve.deployment
class Pipeline:
    def __init__(self, first, second):
        self.first = first
        self.second = second

    async def __call__(self, x):
        y = await self.first.remote(x)
        return await self.second.remote(y)

    async def chained(self, x):
        return await self.second.remote(self.first.remote(x))  # a response as an argument


def test_composition_bound_deployments_arrive_as_handles() -> None:
    app = Pipeline.bind(Adder.options(name="plus1").bind(1), Adder.options(name="plus10").bind(10))
    handle = serve.run(app)
    assert handle.remote(0).result() == 11
    assert handle.chained.remote(5).result() == 16
    assert set(serve.list_deployments()) == {"Pipeline", "plus1", "plus10"}


def test_responses_from_a_sync_and_an_async_driver() -> None:
    handle = serve.run(Adder.bind(2))
    first = handle.remote(1)
    assert handle.remote(first).result() == 5  # response passed as an argument

    async def main():
        return await asyncio.gather(*[handle.remote(i) for i in range(50)])

    assert asyncio.run(main()) == [i + 2 for i in range(50)]
    with pytest.raises(TimeoutError):
        serve.run(Sleeper.bind()).remote(2).result(timeout_s=0.2)


@actors.remote
class Latch:
    """Records what a deployment saw; holds calls until opened (the test's remote control)."""

    def __init__(self):
        self.seen = []
        self.opened = asyncio.Event()

    async def record(self, x):
        self.seen.append(x)

    async def wait(self):
        await self.opened.wait()

    async def open(self):
        self.opened.set()

    async def calls(self):
        return self.seen


@serve.deployment(max_ongoing_requests=1)
class Gate:
    def __init__(self, latch):
        self.latch = latch

    async def __call__(self, x):
        await self.latch.record.remote(x)
        if x == "hold":
            await self.latch.wait.remote()
        return x


def test_responses_made_on_an_event_loop_are_its_futures() -> None:
    latch = Latch.remote()
    handle = serve.run(Gate.bind(latch))

    async def main():
        loop = asyncio.get_running_loop()
        first = handle.remote(1)
        assert isinstance(first, serve.DeploymentResponse)
        with pytest.raises(RuntimeError, match="deadlock"):
            first.result()  # on the loop that awaits it
        assert await first == 1
        assert await loop.run_in_executor(None, actors.get, handle.remote(2)) == 2
        assert await loop.run_in_executor(None, handle.remote(3).result, 10) == 3
        assert await asyncio.gather(*[handle.remote(i) for i in range(20)]) == list(range(20))

        hold = handle.remote("hold")
        while "hold" not in await latch.calls.remote():
            await asyncio.sleep(0.01)
        queued = handle.remote("never")  # max_ongoing_requests=1: it can only wait
        queued.cancel()
        await latch.open.remote()
        assert await hold == "hold" and await handle.remote("after") == "after"
        with pytest.raises(asyncio.CancelledError):
            await queued
        return await latch.calls.remote()

    seen = asyncio.run(main())
    assert "never" not in seen and seen[-2:] == ["hold", "after"], "a cancelled call still ran"


@serve.deployment
def echo(x):
    return x


@serve.deployment
class Fanout:
    """Passes one response to two calls and cancels one of them, inside a replica."""

    def __init__(self, latch, gate, echo):
        self.latch, self.gate, self.echo = latch, gate, echo

    async def __call__(self, _):
        up = self.gate.remote("hold")
        b, c = self.echo.remote(up), self.echo.remote(up)
        while "hold" not in await self.latch.calls.remote():
            await asyncio.sleep(0.01)
        b.cancel()  # while b waits for `up`
        await self.latch.open.remote()
        return await c, await up


def test_cancelling_a_call_given_a_response_leaves_the_response_to_its_other_users() -> None:
    latch = Latch.remote()
    gate = serve.run(Gate.bind(latch), name="gate", route_prefix=None)
    echoes = serve.run(echo.bind(), name="echo", route_prefix=None)

    async def main():  # from an async driver
        up = gate.remote("hold")
        b, c = echoes.remote(up), echoes.remote(up)
        while "hold" not in await latch.calls.remote():
            await asyncio.sleep(0.01)
        b.cancel()
        await latch.open.remote()
        return await c, await up

    assert asyncio.run(main()) == ("hold", "hold")
    latch2 = Latch.remote()
    fanout = serve.run(Fanout.bind(latch2, Gate.options(name="Gate2").bind(latch2), echo.bind()), name="fan",
                       route_prefix=None)
    assert tuple(fanout.remote(0).result(timeout_s=30)) == ("hold", "hold")


@serve.deployment(max_ongoing_requests=2, max_queued_requests=1)
class Sleeper:
    def __init__(self):
        self.active = 0
        self.peak = 0
        self.lock = threading.Lock()

    async def __call__(self, seconds):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(seconds)
        self.active -= 1
        return self.peak

    def peak_seen(self):
        return self.peak


def test_back_pressure_and_the_max_ongoing_bound() -> None:
    handle = serve.run(Sleeper.bind())
    running = [handle.remote(4.0) for _ in range(2)]  # fill both slots (long enough for a slow machine)
    queued = handle.remote(0)  # waits at the caller
    wait_until(lambda: _rejects(handle), timeout=5, what="back-pressure")
    assert max(r.result(timeout_s=20) for r in running) <= 2
    assert queued.result(timeout_s=10) <= 2
    assert handle.peak_seen.remote().result() <= 2


def _rejects(handle) -> bool:
    try:
        handle.remote(0).result(timeout_s=5)
    except serve.BackPressureError:
        return True
    return False


def test_replica_context_inside_a_replica() -> None:
    @serve.deployment(name="ctx")
    class WhoAmI:
        def __call__(self):
            ctx = serve.get_replica_context()
            return ctx.deployment, ctx.replica_tag, ctx.app_name

    name, tag, app = serve.run(WhoAmI.bind(), name="myapp").remote().result()
    assert (name, app) == ("ctx", "myapp") and tag
    with pytest.raises(RuntimeError, match="outside a replica"):
        serve.get_replica_context()


def test_a_killed_replica_is_replaced_and_traffic_goes_on() -> None:
    handle = serve.run(Counter.options(num_replicas=2).bind())
    pids = {handle.pid.remote().result() for _ in range(40)}
    assert len(pids) == 2
    victim = next(iter(pids))
    os.kill(victim, 9)
    failures = 0

    def pid() -> int | None:
        nonlocal failures
        try:
            return handle.pid.remote().result(timeout_s=10)
        except actors.ActorDiedError:
            failures += 1  # only a request that was on the killed replica may fail
            return None

    def replaced() -> bool:
        now = {pid() for _ in range(20)} - {None}
        return len(now) == 2 and victim not in now

    wait_until(replaced, timeout=30, what="the killed replica to be replaced")
    assert failures <= 1


@serve.deployment(num_replicas=5, version="1")
class Versioned:
    def __call__(self):
        return os.getpid()

    def version(self):
        return "1"


def test_rolling_update_under_steady_load_loses_no_request() -> None:
    handle = serve.run(Versioned.bind())
    old_pids = {handle.remote().result() for _ in range(60)}
    assert len(old_pids) == 5
    results: list = []
    errors: list = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                results.append(handle.remote().result(timeout_s=30))
            except Exception as e:  # any failure fails the test
                errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        serve.run(Versioned.options(version="2").bind())  # returns when the roll is done
        served_during = len(results)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    new_pids = {handle.remote().result() for _ in range(60)}
    assert len(new_pids) == 5 and not (new_pids & old_pids)
    assert served_during > 50 and set(results) & old_pids and set(results) & new_pids


def test_traffic_flows_while_the_controller_is_killed_and_it_recovers() -> None:
    from actors.system import current_runtime

    handle = serve.run(Counter.options(num_replicas=2).bind())
    pids = {handle.pid.remote().result() for _ in range(40)}
    controller = actors.get_actor("SERVE_CONTROLLER", namespace="serve")
    rt = current_runtime()
    info = rt.run_threadsafe(lambda: rt.head.get_actor_info(controller.actor_id))
    old_routes = actors.get(controller.listen.remote("routes", -1, 0.0), timeout=10)
    os.kill(info.pid, 9)
    for _ in range(50):  # the routers keep their replica set: no request fails
        handle.remote().result(timeout_s=10)

    def first_answers() -> tuple | None:  # from the restarted controller, as soon as it is up
        try:
            routes = actors.get(controller.listen.remote("routes", -1, 0.0), timeout=10)
            replicas = actors.get(controller.listen.remote("replicas/default#Counter", -1, 0.0), timeout=10)
        except actors.ActorDiedError:
            return None  # the killed incarnation
        return routes, replicas

    routes, replica_set = wait_until(first_answers, timeout=30, what="the restarted controller")
    # What proxies and routers get first from it: the adopted replicas, still routed (never an
    # empty table that would turn requests into 404s), at a version above any they held.
    assert routes.value.routes == old_routes.value.routes == {"/": DeploymentId("default", "Counter")}
    assert routes.version > old_routes.version
    assert len(replica_set.value.replicas) == 2
    wait_until(lambda: serve.status()["applications"]["default"]["deployments"]["Counter"]["status"] == "HEALTHY",
               timeout=30, what="the restarted controller to report the deployment healthy")
    assert {handle.pid.remote().result() for _ in range(40)} == pids  # replicas adopted, not replaced
    new_info = rt.run_threadsafe(lambda: rt.head.get_actor_info(controller.actor_id))
    assert new_info.pid != info.pid


@serve.deployment
class SlowStart:
    def __init__(self, port):
        import socket

        # a constructor busy until the test says so (as one loading a model would be)
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.recv(1)

    def __call__(self):
        return "constructed"


def test_a_replica_still_starting_when_the_controller_dies_is_not_routed_until_ready() -> None:
    import socket

    from actors.system import current_runtime

    with socket.create_server(("127.0.0.1", 0)) as server:
        handle = serve.run(SlowStart.bind(server.getsockname()[1]), _wait=False)
        server.settimeout(30)
        conn, _ = server.accept()  # the constructor is running
        controller = actors.get_actor("SERVE_CONTROLLER", namespace="serve")

        def deployment() -> dict:
            return serve.status()["applications"]["default"]["deployments"]["SlowStart"]

        rt = current_runtime()
        info = rt.run_threadsafe(lambda: rt.head.get_actor_info(controller.actor_id))
        os.kill(info.pid, 9)

        def restarted() -> bool:
            try:
                return actors.get(controller.status.remote(), timeout=10) is not None
            except actors.ActorDiedError:
                return False  # the killed incarnation

        wait_until(restarted, timeout=30, what="the controller to restart")
        # recovered as it was: still starting, not routed, not healthy
        assert deployment()["replicas"] == {"STARTING": 1} and deployment()["status"] == "UPDATING"
        assert actors.get(controller.listen.remote("replicas/default#SlowStart", -1, 0.0), timeout=10).value.replicas == ()
        conn.sendall(b"x")  # the constructor may finish
        conn.close()
    wait_until(lambda: deployment()["status"] == "HEALTHY", timeout=30, what="the replica to finish starting")
    assert deployment()["replicas"] == {"RUNNING": 1}, "the starting replica was replaced, not adopted"
    assert handle.remote().result(timeout_s=10) == "constructed"


@serve.deployment(autoscaling_config={"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 1,
                                      "upscale_delay_s": 0, "downscale_delay_s": 1, "metrics_interval_s": 0.2,
                                      "look_back_period_s": 0.5}, max_ongoing_requests=10)
class Elastic:
    async def __call__(self, seconds):
        await asyncio.sleep(seconds)
        return os.getpid()


def test_autoscaling_follows_load_up_and_back_down() -> None:
    handle = serve.run(Elastic.bind())

    def replicas() -> int:
        return serve.status()["applications"]["default"]["deployments"]["Elastic"]["replicas"].get("RUNNING", 0)

    assert replicas() == 1
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            handle.remote(0.2).result(timeout_s=30)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: replicas() == 3, timeout=30, what="scale-up to max_replicas under load")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    wait_until(lambda: replicas() == 1, timeout=30, what="scale-down to min_replicas after the load")


def test_autoscaling_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="max_replicas"):
        serve.deployment(autoscaling_config={"min_replicas": 3, "max_replicas": 1})


@serve.deployment(health_check_period_s=0.2, health_check_timeout_s=2)
class Fragile:
    def __init__(self):
        self.healthy = True

    def check_health(self):
        if not self.healthy:
            raise RuntimeError("lost the GPU")

    def break_it(self):
        self.healthy = False

    def pid(self):
        return os.getpid()


def test_a_replica_failing_its_health_checks_is_replaced() -> None:
    handle = serve.run(Fragile.bind())
    first = handle.pid.remote().result()
    handle.break_it.remote().result()
    wait_until(lambda: _pid_or_none(handle) not in (None, first), timeout=20,
               what="the unhealthy replica to be replaced")
    assert serve.status()["applications"]["default"]["deployments"]["Fragile"]["replicas"] == {"RUNNING": 1}


def _pid_or_none(handle) -> int | None:
    try:
        return handle.pid.remote().result(timeout_s=5)
    except Exception:
        return None


@serve.deployment(graceful_shutdown_wait_loop_s=0, graceful_shutdown_timeout_s=10)
class Slow:
    def __init__(self):
        self.running = 0

    async def __call__(self, seconds):
        self.running += 1
        await asyncio.sleep(seconds)
        return "finished"

    def started(self):
        return self.running


def test_deleting_waits_for_requests_in_flight() -> None:
    handle = serve.run(Slow.bind())
    in_flight = [handle.remote(1.5) for _ in range(3)]
    wait_until(lambda: handle.started.remote().result() == 3, timeout=10, what="the requests to be running")
    serve.delete("default")  # drains: the requests already running complete before the replica goes
    assert [r.result(timeout_s=10) for r in in_flight] == ["finished"] * 3
    assert serve.list_deployments() == {}


def test_detached_serve_is_reached_from_another_driver(cluster) -> None:
    from actors.system import current_runtime

    from ..conftest import read_json_line, start_driver

    rt = current_runtime()
    serve.start(detached=True)
    serve.run(Adder.options(name="shared_adder").bind(100), name="shared")
    driver = start_driver(f"""
        import json, actors, serve
        actors.init(address={rt.head_address!r}, token={rt.token!r})
        d = serve.get_deployment("shared_adder")
        print(json.dumps({{"value": d.get_handle().remote(1).result(), "repr": repr(d)}}), flush=True)
    """)
    try:
        out = read_json_line(driver)
        assert out == {"value": 101, "repr": "Deployment(name=shared_adder,version=None,route_prefix=/)"}
        assert driver.wait(timeout=30) == 0
    finally:
        driver.kill()
    assert serve.get_deployment("shared_adder").get_handle().remote(2).result() == 102


def test_zeroserve_status_lists_serve_deployments() -> None:
    import json

    from actors.system import current_runtime

    from ..conftest import zeroserve

    serve.run(Adder.options(name="listed").bind(1), name="statusapp")
    rt = current_runtime()
    address = rt.head_address.removeprefix("tcp://")

    def listed() -> dict | None:
        data = json.loads(zeroserve("status", "--address", address, "--token", rt.token, "--json").stdout)
        return data["serve"].get("statusapp#listed")

    entry = wait_until(listed, timeout=20, what="the deployment in zeroserve status")
    assert entry["app"] == "statusapp" and entry["status"] == "HEALTHY" and entry["route_prefix"] == "/" and entry["name"] == "listed"
    table = zeroserve("status", "--address", address, "--token", rt.token).stdout
    assert "Serve deployments:" in table and "listed" in table and "1/1" in table


def test_the_default_http_port_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ZEROSERVE_HTTP_PORT", "18123")
    assert serve.HTTPOptions().port == 18123 and serve.HTTPOptions.of({"port": 9000}).port == 9000
    monkeypatch.setenv("ZEROSERVE_HTTP_PORT", "eighty")
    with pytest.raises(ValueError, match="ZEROSERVE_HTTP_PORT must be a port number"):
        serve.HTTPOptions()
