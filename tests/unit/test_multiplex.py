"""Unit tests of model multiplexing: the per-replica cache behind `@serve.multiplexed`
(`serve._data.multiplex`), and the model-aware choice of routers (`serve._data.model_routing`,
and `Router` with the fakes of test_router).

Contract under test:
- the cache holds at most N models, least recently used evicted first, and closes what it
  evicts (`aclose`, `close`, an async `__del__`; a plain `__del__` runs when it drops it);
- concurrent first requests for one model load it once; a cancelled first request does not
  cancel the load the others wait for; a failed load is not cached;
- bad use fails at decoration or call time with an error that says what to change;
- routers send a model's requests to a replica holding it (p2c among holders), else to one
  with a free slot, else to any; a steady mix of K models over R replicas of N slots
  (N*R >= K) settles with no loads.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest

import serve
from serve._data.context import NO_REQUEST, current_request
from serve._data.model_routing import ModelLocator, PowerOfTwoChoices
from serve._data.multiplex import ModelCache
from serve._data.router import replica_set_key
from serve.messages import DeploymentId, ReplicaId, ReplicaInfo
from tests.unit.test_controller import FakeIO, controller_on, healthy, target
from tests.unit.test_router import make_env, settle, until

DEP = DeploymentId("app", "d")


class Model:
    closed: list[str] = []

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    async def aclose(self) -> None:
        Model.closed.append(self.model_id)


def loader(loads: list[str], gate: asyncio.Event | None = None, fail: set[str] | None = None) -> Any:
    async def load(model_id: str) -> Model:
        loads.append(model_id)
        if gate is not None:
            await gate.wait()
        if fail and model_id in fail:
            raise RuntimeError(f"cannot load {model_id}")
        return Model(model_id)
    return load


# -- the cache ---------------------------------------------------------------------------
def test_cache_evicts_the_least_recently_used_and_closes_it() -> None:
    async def main() -> None:
        Model.closed = []
        loads: list[str] = []
        changes: list[tuple[str, ...]] = []
        cache = ModelCache(loader(loads), 2, lambda ids, cap: changes.append(ids))
        a = await cache.get("a")
        await cache.get("b")
        assert await cache.get("a") is a  # held: no load, and now the most recently used
        await cache.get("c")  # evicts b, not a
        assert loads == ["a", "b", "c"]
        assert Model.closed == ["b"]
        assert cache.model_ids == ("a", "c")
        assert changes[-1] == ("a", "c")
        assert (cache.loads, cache.unloads) == (3, 1)
    asyncio.run(main())


def test_concurrent_first_requests_load_once_and_survive_the_first_being_cancelled() -> None:
    async def main() -> None:
        loads: list[str] = []
        gate = asyncio.Event()
        cache = ModelCache(loader(loads, gate), 3)
        first = asyncio.ensure_future(cache.get("m"))
        others = [asyncio.ensure_future(cache.get("m")) for _ in range(9)]
        await settle()
        first.cancel()
        gate.set()
        models = await asyncio.gather(*others)
        assert loads == ["m"]
        assert all(m is models[0] for m in models)
    asyncio.run(main())


def test_a_failed_load_is_not_cached() -> None:
    async def main() -> None:
        loads: list[str] = []
        fail = {"bad"}
        cache = ModelCache(loader(loads, fail=fail), 2)
        results = await asyncio.gather(cache.get("bad"), cache.get("bad"), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results) and loads == ["bad"]
        fail.clear()
        assert (await cache.get("bad")).model_id == "bad"
        assert loads == ["bad", "bad"]
    asyncio.run(main())


def test_never_more_than_n_models_under_concurrent_loads() -> None:
    async def main() -> None:
        loads: list[str] = []
        cache = ModelCache(loader(loads), 2)
        await cache.get("a")
        await cache.get("b")
        await asyncio.gather(*(cache.get(m) for m in "cdef"))
        assert len(cache.model_ids) == 2 and set(cache.model_ids) <= set("cdef")
    asyncio.run(main())


def test_close_paths() -> None:
    events: list[str] = []

    class SyncClose:
        def close(self) -> None:
            events.append("close")

    class AsyncDel:
        async def __del__(self) -> None:
            events.append("adel")

    class PlainDel:
        def __del__(self) -> None:
            events.append("del")

    kinds = {"s": SyncClose, "a": AsyncDel, "p": PlainDel}

    async def main() -> None:
        async def load(model_id: str) -> Any:
            return kinds[model_id]()
        cache = ModelCache(load, 1)
        for m in "sapx":
            if m in kinds:
                await cache.get(m)
            else:
                cache._loader = loader([])  # any model, to evict the last one
                await cache.get(m)
        assert events == ["close", "adel", "del"]
    asyncio.run(main())


def test_decorator_on_a_method_keeps_one_cache_per_instance_and_reads_the_request_model() -> None:
    class Deployment:
        def __init__(self) -> None:
            self.loads: list[str] = []

        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            self.loads.append(model_id)
            return f"model-{model_id}"

    async def main() -> None:
        a, b = Deployment(), Deployment()
        assert await a.get_model("1") == "model-1"
        assert await a.get_model("1") == "model-1"
        assert await b.get_model("1") == "model-1"
        assert a.loads == ["1"] and b.loads == ["1"]
        token = current_request.set(("rid", "", "app", "m7", ""))
        try:
            assert serve.get_multiplexed_model_id() == "m7"
            assert await a.get_model() == "model-m7"
        finally:
            current_request.reset(token)
        assert serve.get_multiplexed_model_id() == ""
        with pytest.raises(ValueError, match="serve_multiplexed_model_id"):
            await a.get_model()
        with pytest.raises(TypeError, match="string"):
            await a.get_model(3)
    assert current_request.get() is NO_REQUEST
    asyncio.run(main())


def test_decorator_on_a_function_and_without_arguments() -> None:
    loads: list[str] = []

    @serve.multiplexed
    async def load(model_id: str) -> str:
        loads.append(model_id)
        return model_id.upper()

    async def main() -> None:
        assert [await load(m) for m in "abab"] == ["A", "B", "A", "B"]
        assert loads == ["a", "b"]
    asyncio.run(main())


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "3"])
def test_bad_capacity_fails_at_decoration(bad: Any) -> None:
    with pytest.raises(ValueError, match="max_num_models_per_replica"):
        serve.multiplexed(max_num_models_per_replica=bad)


def test_sync_loader_and_wrong_signature_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match="async def"):
        @serve.multiplexed(max_num_models_per_replica=2)
        def load(self: Any, model_id: str) -> None: ...

    with pytest.raises(TypeError, match="model id as its one argument"):
        @serve.multiplexed(max_num_models_per_replica=2)
        async def load2(self: Any, model_id: str, extra: int) -> None: ...


# -- the choice --------------------------------------------------------------------------
def rid(i: int) -> ReplicaId:
    return ReplicaId(DEP, f"r{i}")


def infos(n: int, held: dict[int, tuple[str, ...]] | None = None, cap: int = 2) -> list[ReplicaInfo]:
    held = held or {}
    return [ReplicaInfo(rid(i), None, 100, model_ids=held.get(i, ()), max_models=cap)  # type: ignore[arg-type]
            for i in range(n)]


def test_holders_are_preferred_then_free_slots_then_any() -> None:
    policy = PowerOfTwoChoices(random.Random(0))
    locator = ModelLocator()
    reps = infos(4, {0: ("a", "b"), 1: ("a",), 2: ("c", "d")})
    locator.update(reps)
    picked = collections.Counter(locator.choose(policy, reps, {}, "a").replica_id for _ in range(200))  # type: ignore[union-attr]
    assert set(picked) == {rid(0), rid(1)}
    # No holder of "z": a replica with a free slot (r1 has one, r3 two), never the full ones.
    for _ in range(50):
        fresh = ModelLocator()
        fresh.update(reps)
        assert fresh.choose(policy, reps, {}, "z").replica_id in {rid(1), rid(3)}  # type: ignore[union-attr]
    # A holder with no room (max_ongoing_requests reached) is passed over.
    full = {rid(0): 100, rid(1): 100}
    assert locator.choose(policy, reps, full, "a").replica_id in {rid(2), rid(3)}  # type: ignore[union-attr]


def test_a_send_counts_as_holding_until_that_replica_reports_again() -> None:
    locator = ModelLocator()
    policy = PowerOfTwoChoices(random.Random(1))
    reps = infos(3, cap=2)
    locator.update(reps)
    first = locator.choose(policy, reps, {}, "m")
    assert first is not None
    assert all(locator.choose(policy, reps, {}, "m") is first for _ in range(20))
    locator.update(reps)  # pushed for another replica's report: this one's report has not changed
    assert "m" in locator.held(first.replica_id)
    i = int(first.replica_id.tag[1:])
    locator.update(infos(3, {i: ("x",)}, cap=2))  # its own new report wins (it evicted m since)
    assert locator.held(first.replica_id) == ("x",)
    # Past its capacity, the least recently used one is taken to be evicted, as the replica does.
    locator.note(first.replica_id, "y")
    locator.note(first.replica_id, "z")
    assert locator.held(first.replica_id) == ("y", "z")


def simulate(locator: ModelLocator | None, seed: int, k: int = 20, r: int = 4, n: int = 6,
             warmup: int = 500, steady: int = 2000) -> int:
    """Loads during `steady` requests of a random mix of k models over r replicas of n slots,
    each replica an LRU, the router pushed each replica's held set every 25 requests."""
    rng = random.Random(seed)
    policy = PowerOfTwoChoices(random.Random(seed))
    held = [collections.OrderedDict() for _ in range(r)]  # type: list[collections.OrderedDict[str, None]]

    def snapshot() -> list[ReplicaInfo]:
        return [ReplicaInfo(rid(i), None, 100, model_ids=tuple(held[i]), max_models=n)  # type: ignore[arg-type]
                for i in range(r)]
    loads = 0
    for step in range(warmup + steady):
        if step % 25 == 0 and locator is not None:
            locator.update(snapshot())
        model = f"m{rng.randrange(k)}"
        chosen = locator.choose(policy, snapshot(), {}, model) if locator else policy.choose(snapshot(), {})
        assert chosen is not None
        cache = held[int(chosen.replica_id.tag[1:])]
        if model in cache:
            cache.move_to_end(model)
        else:
            if step >= warmup:
                loads += 1
            cache[model] = None
            if len(cache) > n:
                cache.popitem(last=False)
    return loads


def test_a_steady_mix_settles_with_no_loads() -> None:
    for seed in range(5):
        assert simulate(ModelLocator(), seed) == 0
    assert simulate(None, 0) > 100  # without model-aware routing: loads all the time


def test_router_routes_a_model_to_its_holder() -> None:
    async def main() -> None:
        env = make_env("a", "b", "c")
        rs = env.replica_set()
        value = rs.value
        value = type(value)(value.deployment, tuple(
            ReplicaInfo(ri.replica_id, ri.handle, ri.max_ongoing_requests, model_ids=("m1",) if ri.replica_id == "b"
                        else (), max_models=2) for ri in value.replicas))
        await env.apply(type(rs)(rs.version, value, True))
        ctx = ("rid", "", "app", "m1", "")
        futs = [asyncio.ensure_future(env.router.call("m", (), {}, ctx)) for _ in range(10)]
        await until(lambda: len(env.log) == 10, "ten dispatched")
        assert {r.replica for r in env.log} == {"b"}
        assert all(r.ctx == ctx for r in env.log)
        for r in env.log:
            r.succeed(1)
        await asyncio.gather(*futs)
        # Through the no-task path too, and a new model goes to a replica with a free slot
        # (then stays there).
        out = []
        for _ in range(5):
            env.router.send("m", (), {}, out.append, ("rid", "", "app", "m2", ""))
        await settle()
        assert len({r.replica for r in env.log[10:]}) == 1
        env.router.close()
    asyncio.run(main())


def test_the_controller_passes_a_replicas_models_on_to_routers() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=2)])
        await healthy(c, io)
        dep = DeploymentId("app", "d")
        first = await c.listen(replica_set_key(dep), -1, 0.0)
        one = first.value.replicas[0].replica_id
        waiter = asyncio.ensure_future(c.listen(replica_set_key(dep), first.version, 30.0))
        c.record_models(one, ("m1", "m2"), 6)
        update = await asyncio.wait_for(waiter, 5)  # pushed at once, not at the next tick
        held = {r.replica_id: (r.model_ids, r.max_models) for r in update.value.replicas}
        assert held[one] == (("m1", "m2"), 6)
        assert all(v == ((), 0) for k, v in held.items() if k != one)
        c.record_models(one, ("m1", "m2"), 6)  # the same again (a health check's report): nothing new
        assert (await c.listen(replica_set_key(dep), -1, 0.0)).version == update.version
        c.record_models(ReplicaId(dep, "gone"), ("x",), 6)  # an unknown replica: ignored
    asyncio.run(main())


def test_a_load_in_progress_is_reported_and_capacity_is_found_on_the_instance() -> None:
    from serve._data.multiplex import capacity_of

    class D:
        @serve.multiplexed(max_num_models_per_replica=5)
        async def get_model(self, model_id: str) -> str:
            return model_id

    assert capacity_of(D()) == 5
    assert capacity_of(object()) == 0

    async def main() -> None:
        gate = asyncio.Event()
        reports: list[tuple[str, ...]] = []
        cache = ModelCache(loader([], gate, fail={"bad"}), 2, lambda ids, cap: reports.append(ids))
        loading = asyncio.ensure_future(cache.get("m"))
        await settle()
        assert reports == [("m",)]  # routers hear of it before it finished loading
        gate.set()
        await loading
        failing = asyncio.ensure_future(cache.get("bad"))
        with pytest.raises(RuntimeError):
            await failing
        assert reports[-1] == ("m",)  # a failed load is taken back
    asyncio.run(main())


def test_two_loaders_in_one_deployment_report_all_they_hold_together() -> None:
    import gc

    from serve._data import multiplex

    gc.collect()  # earlier tests' instances (an instance and its caches form a cycle): one replica here

    class D:
        @serve.multiplexed(max_num_models_per_replica=2)
        async def get_model(self, model_id: str) -> str:
            return model_id

        @serve.multiplexed(max_num_models_per_replica=3)
        async def get_tokenizer(self, model_id: str) -> str:
            return model_id

    assert multiplex.capacity_of(D()) == 5
    reports: list[tuple[tuple[str, ...], int]] = []

    async def main() -> None:
        d = D()
        await d.get_model("m1")
        await d.get_tokenizer("t1")
        await d.get_model("m2")

    multiplex.set_listener(lambda ids, capacity: reports.append((ids, capacity)))
    try:
        asyncio.run(main())
    finally:
        multiplex.set_listener(None)
    ids, capacity = reports[-1]
    assert sorted(ids) == ["m1", "m2", "t1"] and capacity == 5  # every loader's models, not only the last-changed one's
