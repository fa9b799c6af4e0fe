"""The `actors` API against a real embedded cluster: creation, calls, concurrency,
named and detached actors, refs, errors, resources."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

import actors
from actors.system import current_runtime

from ..conftest import read_json_line, start_driver, wait_until

pytestmark = pytest.mark.usefixtures("cluster")


class CustomError(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"code {code}: {detail}")
        self.code = code
        self.detail = detail


@actors.remote
class Counter:
    def __init__(self, start: int = 0) -> None:
        self.value = start

    def incr(self, by: int = 1) -> int:
        self.value += by
        return self.value

    def get(self) -> int:
        return self.value

    def pid(self) -> int:
        return os.getpid()

    def fail(self, code: int) -> None:
        raise CustomError(code, "went wrong")

    def echo(self, *args, **kwargs):
        return args, kwargs


@actors.remote
class Gate:
    """Async actor: callers wait together until `n` have arrived (proves concurrency)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.event = asyncio.Event()

    async def arrive(self, n: int) -> int:
        self.arrived += 1
        if self.arrived >= n:
            self.event.set()
        await self.event.wait()
        return self.arrived

    async def call_other(self, other: actors.ActorHandle, by: int) -> int:
        return await other.incr.remote(by)

    async def sum_refs(self, refs: list) -> int:
        values = [await r for r in refs]
        return sum(values)

    async def identity(self, x):
        return x

    async def blocking_result(self, other: actors.ActorHandle) -> int:
        return other.get.remote().result()  # must raise, not deadlock


def test_create_and_call_keeps_state() -> None:
    c = Counter.remote(10)
    assert actors.get(c.incr.remote()) == 11
    assert actors.get([c.incr.remote(2) for _ in range(50)])[-1] == 111
    assert c.incr.remote(0).result(timeout=10) == 111


def test_args_and_kwargs_round_trip() -> None:
    c = Counter.remote()
    args, kwargs = actors.get(c.echo.remote(1, "two", [3.0], key={"nested": (4,)}))
    assert args == (1, "two", [3.0]) and kwargs == {"key": {"nested": (4,)}}


def test_unknown_method_and_direct_call_are_clear_errors() -> None:
    c = Counter.remote()
    with pytest.raises(AttributeError, match="no method 'nope'"):
        c.nope.remote()
    with pytest.raises(TypeError, match=r"\.remote\(\)"):
        c.incr(1)
    with pytest.raises(TypeError, match=r"Counter\.remote\(\)"):
        Counter()


def test_user_exception_keeps_type_attributes_and_remote_traceback() -> None:
    c = Counter.remote()
    with pytest.raises(CustomError) as info:
        actors.get(c.fail.remote(7))
    err = info.value
    assert err.code == 7 and err.detail == "went wrong"
    assert type(err).__name__ == "CustomError"
    assert "Remote traceback" in str(err) and "in fail" in str(err)
    assert actors.get(c.incr.remote()) == 1  # the actor keeps serving


def test_async_methods_run_concurrently() -> None:
    g = Gate.remote()
    refs = [g.arrive.remote(20) for _ in range(20)]
    assert sorted(actors.get(refs, timeout=10)) == [20] * 20


def test_sync_methods_default_to_one_at_a_time() -> None:
    @actors.remote
    class Tracker:
        def __init__(self) -> None:
            self.active = 0
            self.peak = 0
            self.lock = threading.Lock()

        def work(self) -> None:
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            sum(range(20000))
            with self.lock:
                self.active -= 1

        def peak_seen(self) -> int:
            return self.peak

    t = Tracker.remote()
    actors.get([t.work.remote() for _ in range(30)])
    assert actors.get(t.peak_seen.remote()) == 1


def test_sync_methods_run_in_parallel_up_to_max_concurrency() -> None:
    @actors.remote(max_concurrency=4)
    class Parallel:
        def __init__(self) -> None:
            self.barrier = threading.Barrier(4, timeout=10)

        def meet(self) -> bool:
            self.barrier.wait()  # only passes if 4 calls run at once
            return True

    p = Parallel.remote()
    assert actors.get([p.meet.remote() for _ in range(4)], timeout=20) == [True] * 4


def test_sync_method_does_not_block_the_event_loop() -> None:
    @actors.remote(max_concurrency=2)
    class Mixed:
        def __init__(self) -> None:
            self.flag = threading.Event()

        def wait_flag(self) -> bool:
            return self.flag.wait(timeout=10)

        async def set_flag(self) -> None:
            self.flag.set()

    m = Mixed.remote()
    waiting = m.wait_flag.remote()
    actors.get(m.set_flag.remote(), timeout=5)  # runs on the loop while a thread blocks
    assert actors.get(waiting, timeout=5) is True


def test_actor_calls_another_actor_through_a_handle() -> None:
    c = Counter.remote(100)
    g = Gate.remote()
    assert actors.get(g.call_other.remote(c, 5)) == 105
    assert actors.get(c.get.remote()) == 105


def test_refs_as_arguments_are_resolved_and_nested_refs_awaitable() -> None:
    c = Counter.remote()
    g = Gate.remote()
    first = c.incr.remote(3)
    assert actors.get(g.identity.remote(first)) == 3  # top-level ref: resolved before the call
    nested = [c.incr.remote(1) for _ in range(3)]  # 4, 5, 6
    assert actors.get(g.sum_refs.remote(nested)) == 15


def test_result_on_the_loop_thread_raises_instead_of_deadlocking() -> None:
    c = Counter.remote()
    g = Gate.remote()
    with pytest.raises(RuntimeError, match="would deadlock"):
        actors.get(g.blocking_result.remote(c), timeout=10)


def test_await_refs_from_an_async_driver() -> None:
    c = Counter.remote()

    async def main() -> list[int]:
        return list(await asyncio.gather(*[c.incr.remote() for _ in range(100)]))

    assert sorted(asyncio.run(main())) == list(range(1, 101))


def test_get_timeout_and_wait() -> None:
    g = Gate.remote()
    never = g.arrive.remote(2)  # waits for a second caller that never comes
    with pytest.raises(actors.GetTimeoutError):
        actors.get(never, timeout=0.2)
    c = Counter.remote()
    done_ref = c.incr.remote()
    ready, not_ready = actors.wait([never, done_ref], num_returns=1, timeout=5)
    assert ready == [done_ref] and not_ready == [never]
    ready, not_ready = actors.wait([never], num_returns=1, timeout=0.1)
    assert ready == [] and not_ready == [never]
    actors.kill(g)


def test_named_actors_and_namespaces() -> None:
    c = Counter.options(name="named-counter").remote(5)
    assert actors.get(actors.get_actor("named-counter").incr.remote()) == 6
    with pytest.raises(ValueError, match="already exists"):
        Counter.options(name="named-counter").remote()
    same = Counter.options(name="named-counter", get_if_exists=True).remote()
    assert actors.get(same.get.remote()) == 6
    other_ns = Counter.options(name="named-counter", namespace="elsewhere").remote(50)
    assert actors.get(actors.get_actor("named-counter", namespace="elsewhere").get.remote()) == 50
    with pytest.raises(ValueError, match="no actor named"):
        actors.get_actor("named-counter", namespace="nowhere")
    actors.kill(c)
    with pytest.raises(ValueError, match="no actor named"):
        actors.get_actor("named-counter")
    actors.kill(other_ns)


def test_handles_are_picklable_across_processes(cluster) -> None:
    c = Counter.options(name="shared", lifetime="detached", namespace="shared-ns").remote(0)
    rt = current_runtime()
    driver = start_driver(f"""
        import json, actors
        actors.init(address={rt.head_address!r}, token={rt.token!r}, namespace="shared-ns")
        h = actors.get_actor("shared")
        print(json.dumps({{"value": actors.get(h.incr.remote(41))}}), flush=True)
        actors.shutdown()
    """)
    try:
        assert read_json_line(driver)["value"] == 41
        assert driver.wait(timeout=30) == 0
    finally:
        driver.kill()
    assert actors.get(c.get.remote()) == 41  # detached: survived the other driver's exit
    actors.kill(c)


def test_non_detached_actors_die_with_their_driver(cluster) -> None:
    rt = current_runtime()
    driver = start_driver(f"""
        import json, sys, actors
        actors.init(address={rt.head_address!r}, token={rt.token!r}, namespace="owned")

        @actors.remote
        class A:
            def ping(self):
                return 1

        a = A.options(name="owned-actor").remote()
        actors.get(a.ping.remote())
        print(json.dumps({{"ok": True}}), flush=True)
        sys.stdin.readline()
    """)
    try:
        read_json_line(driver)
        h = actors.get_actor("owned-actor", namespace="owned")
        assert actors.get(h.ping.remote()) == 1
        driver.kill()  # SIGKILL: no goodbye; the head notices the missing heartbeats
        driver.wait(timeout=30)
        wait_until(lambda: _fails_with_died(h, "ping"), timeout=20, what="the dead driver's actor to be killed")
        with pytest.raises(ValueError, match="no actor named"):
            actors.get_actor("owned-actor", namespace="owned")
    finally:
        driver.kill()


def test_kill_makes_later_calls_fail() -> None:
    c = Counter.remote()
    actors.get(c.incr.remote())
    actors.kill(c)
    wait_until(lambda: _fails_with_died(c), what="calls to a killed actor to fail")
    with pytest.raises(actors.ActorDiedError):
        actors.kill(c)


def _fails_with_died(c: actors.ActorHandle, method: str = "incr") -> bool:
    try:
        actors.get(getattr(c, method).remote(), timeout=5)
    except actors.ActorDiedError:
        return True
    return False


def test_nodes_and_resources_accounting() -> None:
    nodes = actors.nodes()
    assert len(nodes) == 1 and nodes[0]["alive"] and nodes[0]["ip"] == "127.0.0.1"
    total = actors.cluster_resources()
    assert total["CPU"] == 4 and total["widget"] == 2
    before = actors.available_resources()
    a = Counter.options(num_cpus=1.5, resources={"widget": 1}).remote()
    actors.get(a.incr.remote())
    after = actors.available_resources()
    assert after["CPU"] == pytest.approx(before["CPU"] - 1.5)
    assert after["widget"] == pytest.approx(before["widget"] - 1)
    actors.kill(a)
    wait_until(lambda: actors.available_resources()["CPU"] == pytest.approx(before["CPU"]), what="CPU released")


def test_creation_waits_for_busy_resources_and_fails_when_impossible() -> None:
    with pytest.raises(actors.ActorUnschedulableError, match="no node can ever satisfy"):
        Counter.options(num_cpus=64).remote()
    with pytest.raises(actors.ActorUnschedulableError):
        Counter.options(resources={"unicorn": 1}).remote()
    hog = Counter.options(resources={"widget": 2}).remote()
    actors.get(hog.incr.remote())
    waiting = Counter.options(resources={"widget": 1}).remote(7)
    ref = waiting.get.remote()
    with pytest.raises(actors.GetTimeoutError):
        actors.get(ref, timeout=0.3)  # queued behind the hog's resources
    actors.kill(hog)
    assert actors.get(ref, timeout=20) == 7
    actors.kill(waiting)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_cpus": -1}, "num_cpus must be a number"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1"),
        ({"lifetime": "forever"}, "lifetime must be None or 'detached'"),
        ({"lifetime": "detached"}, "needs a name"),
        ({"colour": "red"}, "unknown actor option"),
        ({"resources": {"CPU": 1}}, "use num_cpus"),
        ({"num_gpus": 1.5}, "fraction of one device"),
        ({"num_gpus": -1}, "num_gpus must be a number"),
        ({"num_gpus": 1, "resources": {"GPU": 1}}, "give GPUs once"),
    ],
)
def test_wrong_options_fail_at_the_call(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Counter.options(**options)
