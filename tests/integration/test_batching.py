"""`@serve.batch`: the batching logic on a plain event loop (fast, no processes), then
batches forming in real replicas under concurrent load, over handles and over HTTP."""

from __future__ import annotations

import asyncio
import math
import pickle

import cloudpickle
import httpx
import pytest

import serve

from ..conftest import free_port, wait_until

pytestmark = pytest.mark.timeout(120)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


class ModelError(Exception):
    def __init__(self, message: str, code: int = 0) -> None:
        super().__init__(message)
        self.code = code


class Recorder:
    """A batched method whose batches are recorded, and can be held at a gate."""

    def __init__(self, name: str = "r", max_batch_size: int = 10) -> None:
        self.name = name
        self.batches: list[list] = []
        self.gate: asyncio.Event | None = None
        self.started: asyncio.Event | None = None

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.0)
    async def double(self, xs: list) -> list:
        self.batches.append(list(xs))
        if self.started is not None:
            self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return [(self.name, 2 * x) for x in xs]


# -- unit: the batching logic on one event loop -------------------------------------------
def test_each_caller_gets_its_own_element_and_batches_are_capped() -> None:
    r = Recorder()

    async def main():
        return await asyncio.gather(*(r.double(i) for i in range(10)))

    assert run(main()) == [("r", 2 * i) for i in range(10)]
    assert [len(b) for b in r.batches] == [4, 4, 2]  # all queued in one loop iteration
    assert sorted(x for b in r.batches for x in b) == list(range(10))


def test_calls_queued_while_a_batch_runs_form_the_next_batch() -> None:
    r = Recorder()

    async def main():
        r.gate, r.started = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(r.double(0))
        await r.started.wait()  # batch [0] is running and held
        rest = [asyncio.ensure_future(r.double(i)) for i in range(1, 4)]
        await asyncio.sleep(0)
        assert r.batches == [[0]]
        r.gate.set()
        return await first, await asyncio.gather(*rest)

    assert run(main()) == (("r", 0), [("r", 2), ("r", 4), ("r", 6)])
    assert r.batches == [[0], [1, 2, 3]]


def test_a_full_batch_goes_at_once_without_waiting_for_the_timeout() -> None:
    @serve.batch(max_batch_size=3, batch_wait_timeout_s=60)
    async def ident(xs):
        return xs

    async def main():
        return await asyncio.wait_for(asyncio.gather(*(ident(i) for i in range(3))), 10)

    assert run(main()) == [0, 1, 2]


def test_a_partial_batch_goes_after_the_wait_timeout_from_its_first_call() -> None:
    flushed: list[tuple[int, float]] = []

    @serve.batch(max_batch_size=100, batch_wait_timeout_s=1.0)
    async def ident(xs):
        flushed.append((len(xs), asyncio.get_running_loop().time()))
        return xs

    async def main():
        t0 = asyncio.get_running_loop().time()
        first = asyncio.ensure_future(ident("a"))
        await asyncio.sleep(0.3)  # a second caller arrives while the first one waits
        second = asyncio.ensure_future(ident("b"))
        return await asyncio.gather(first, second), t0

    results, t0 = run(main())
    assert results == ["a", "b"] and len(flushed) == 1 and flushed[0][0] == 2
    # 1 s after the first call; timed from the second call it would be >= 1.3 s
    assert 1.0 <= flushed[0][1] - t0 < 1.3


def test_options_can_change_later_and_are_checked() -> None:
    r = Recorder()

    async def main():
        return await asyncio.gather(*(r.double(i) for i in range(6)))

    Recorder.double.set_max_batch_size(2)
    try:
        run(main())
        assert [len(b) for b in r.batches] == [2, 2, 2]
        with pytest.raises(ValueError, match="max_batch_size must be >= 1"):
            r.double.set_max_batch_size(0)
        with pytest.raises(ValueError, match="batch_wait_timeout_s must be a finite number"):
            r.double.set_batch_wait_timeout_s(-1)
    finally:
        Recorder.double.set_max_batch_size(4)


def test_user_exception_fails_every_caller_with_its_type_and_the_queue_keeps_working() -> None:
    calls = []

    @serve.batch(max_batch_size=8)
    async def flaky(xs):
        calls.append(list(xs))
        if len(calls) == 1:
            raise ModelError("model exploded", code=7)
        return [x + 1 for x in xs]

    async def main():
        failed = await asyncio.gather(*(flaky(i) for i in range(3)), return_exceptions=True)
        ok = await asyncio.gather(*(flaky(i) for i in range(3)))
        return failed, ok

    failed, ok = run(main())
    assert all(type(e) is ModelError and str(e) == "model exploded" and e.code == 7 for e in failed)
    assert len({id(e) for e in failed}) == 3  # one copy per caller: tracebacks do not pile up
    assert ok == [1, 2, 3]


@pytest.mark.parametrize(
    ("returned", "error", "message"),
    [
        (lambda xs: xs[:-1], ValueError, "returned 2 results for a batch of 3 inputs"),
        (lambda xs: [*xs, 0], ValueError, "returned 4 results for a batch of 3 inputs"),
        (lambda xs: {x: x for x in xs}, TypeError, "must return a list with one result per input, got dict"),
        (lambda xs: None, TypeError, "got NoneType"),
    ],
)
def test_a_return_that_is_not_one_result_per_input_fails_every_caller(returned, error, message) -> None:
    @serve.batch(max_batch_size=3)
    async def bad(xs):
        return returned(xs)

    async def main():
        return await asyncio.gather(*(bad(i) for i in range(3)), return_exceptions=True)

    errors = run(main())
    assert all(type(e) is error and message in str(e) and "bad" in str(e) for e in errors), errors


def test_a_cancelled_caller_does_not_disturb_its_batch() -> None:
    r = Recorder()

    async def main():
        r.gate, r.started = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(r.double(0))
        await r.started.wait()
        queued = [asyncio.ensure_future(r.double(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        queued[1].cancel()  # cancelled while queued: left out of the next batch
        r.gate.set()
        out = [await first, await queued[0], await queued[2]]
        # cancelled while its batch runs: the others still get their results
        r.gate.clear()
        r.started.clear()
        running = [asyncio.ensure_future(r.double(i)) for i in (4, 5, 6)]
        await r.started.wait()
        running[0].cancel()
        r.gate.set()
        out += [await running[1], await running[2]]
        assert queued[1].cancelled() and running[0].cancelled()
        out.append(await r.double(7))  # and the queue serves on
        return out

    assert run(main()) == [("r", 0), ("r", 2), ("r", 6), ("r", 10), ("r", 12), ("r", 14)]
    assert r.batches == [[0], [1, 3], [4, 5, 6], [7]]


def test_each_instance_has_its_own_batches() -> None:
    a, b = Recorder("a"), Recorder("b")

    async def main():
        return await asyncio.gather(*(obj.double(i) for i in range(3) for obj in (a, b)))

    results = run(main())
    assert sorted(results) == sorted([("a", 2 * i) for i in range(3)] + [("b", 2 * i) for i in range(3)])
    assert a.batches == [[0, 1, 2]] and b.batches == [[0, 1, 2]]


def test_several_arguments_arrive_as_lists_and_shapes_do_not_mix() -> None:
    seen = []

    @serve.batch
    async def combine(xs, ys=None, *, scale=None):
        seen.append((xs, ys, scale))
        return [(x, y, s) for x, y, s in zip(xs, ys or [None] * len(xs), scale or [None] * len(xs), strict=True)]

    async def main():
        return await asyncio.gather(combine(1, 2), combine(3, 4), combine(5, scale=10), combine(6, 7))

    assert run(main()) == [(1, 2, None), (3, 4, None), (5, None, 10), (6, 7, None)]
    assert seen == [([1, 3, 6], [2, 4, 7], None), ([5], None, [10])]


def test_bare_decorator_uses_the_defaults_and_works_across_event_loops() -> None:
    sizes = []

    class Model:
        @serve.batch
        async def predict(self, xs):
            sizes.append(len(xs))
            return [x * x for x in xs]

    m = Model()

    async def main(n):
        return await asyncio.gather(*(m.predict(i) for i in range(n)))

    assert run(main(12)) == [i * i for i in range(12)]
    assert run(main(3)) == [0, 1, 4]  # a second loop: a fresh queue
    assert sizes == [10, 2, 3]


def test_a_batched_class_pickles_by_value_and_works_after_use() -> None:
    class Local:
        @serve.batch(max_batch_size=2)
        async def f(self, xs):
            return [len(xs)] * len(xs)

    async def main(obj):
        return await asyncio.gather(*(obj.f(i) for i in range(3)))

    assert run(main(Local())) == [2, 2, 1]
    clone = pickle.loads(cloudpickle.dumps(Local))
    assert run(main(clone())) == [2, 2, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_batch_size": 0}, ValueError, "max_batch_size must be >= 1"),
        ({"max_batch_size": -3}, ValueError, "max_batch_size must be >= 1"),
        ({"max_batch_size": 2.5}, TypeError, "max_batch_size must be an int"),
        ({"max_batch_size": True}, TypeError, "max_batch_size must be an int"),
        ({"max_batch_size": "8"}, TypeError, "max_batch_size must be an int"),
        ({"batch_wait_timeout_s": -0.1}, ValueError, "batch_wait_timeout_s must be a finite number"),
        ({"batch_wait_timeout_s": math.inf}, ValueError, "batch_wait_timeout_s must be a finite number"),
        ({"batch_wait_timeout_s": math.nan}, ValueError, "batch_wait_timeout_s must be a finite number"),
        ({"batch_wait_timeout_s": "0.1"}, TypeError, "batch_wait_timeout_s must be a number"),
    ],
)
def test_bad_options_fail_at_decoration(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        serve.batch(**kwargs)


def test_sync_functions_and_positional_options_fail_at_decoration() -> None:
    with pytest.raises(TypeError, match=r"make .*predict `async def`"):
        class Model:
            @serve.batch(max_batch_size=4)
            def predict(self, xs):
                return xs
    with pytest.raises(TypeError, match=r"async generators only: make .*gen `async def`"):
        @serve.batch
        def gen(xs):  # (async generators stream: tests/unit/test_p14_batch_streams.py)
            yield xs
    with pytest.raises(TypeError, match="give options as keywords"):
        serve.batch(4)


# -- integration: real replicas, handles and HTTP -----------------------------------------
@serve.deployment(max_ongoing_requests=200)
class Batched:
    def __init__(self) -> None:
        self.sizes: dict[str, list[int]] = {}

    def _record(self, method: str, n: int) -> None:
        self.sizes.setdefault(method, []).append(n)

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def double(self, xs: list[int]) -> list[int]:
        self._record("double", len(xs))
        return [2 * x for x in xs]

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def __call__(self, requests: list) -> list[dict]:
        bodies = [await r.json() for r in requests]
        self._record("http", len(bodies))
        return [{"y": 2 * b["x"], "batch": len(bodies)} for b in bodies]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def short(self, xs: list[int]) -> list[int]:
        return xs[:-1]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def explode(self, xs: list[int]) -> list[int]:
        raise ModelError(f"cannot score {len(xs)} inputs", code=len(xs))

    def batch_sizes(self) -> dict[str, list[int]]:
        return self.sizes


@serve.deployment
@serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
async def batched_function(xs: list[int]) -> list[tuple[int, int]]:
    return [(x, len(xs)) for x in xs]


@pytest.fixture(scope="module")
def served(cluster):
    port = free_port()
    serve.start(http_options={"port": port})
    handle = serve.run(Batched.bind(), name="batched", route_prefix="/batched")
    fn_handle = serve.run(batched_function.bind(), name="fn", route_prefix=None)
    yield handle, fn_handle, f"http://127.0.0.1:{port}"
    serve.shutdown()


def test_batches_form_across_concurrent_handle_callers(served) -> None:
    handle, _, _ = served
    responses = [handle.double.remote(i) for i in range(300)]
    assert [r.result(timeout_s=60) for r in responses] == [2 * i for i in range(300)]
    sizes = handle.batch_sizes.remote().result(timeout_s=30)["double"]
    assert sum(sizes) == 300 and max(sizes) <= 16
    assert max(sizes) > 1, sizes


def test_batches_form_across_concurrent_http_requests(served) -> None:
    handle, _, url = served

    async def post_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.gather(*(client.post("/batched", json={"x": i}) for i in range(64)))

    wait_until(lambda: httpx.get(f"{url}/-/routes").json().get("/batched"), timeout=20, what="the /batched route")
    responses = asyncio.run(post_all())
    assert [r.status_code for r in responses] == [200] * 64
    assert [r.json()["y"] for r in responses] == [2 * i for i in range(64)]
    sizes = handle.batch_sizes.remote().result(timeout_s=30)["http"]
    assert sum(sizes) == 64 and max(sizes) > 1, sizes
    assert max(r.json()["batch"] for r in responses) > 1


def test_wrong_length_and_user_errors_reach_every_caller(served) -> None:
    handle, _, _ = served
    short = [handle.short.remote(i) for i in range(20)]
    for r in short:
        with pytest.raises(ValueError, match=r"Batched.short returned \d+ results for a batch of \d+ inputs"):
            r.result(timeout_s=30)
    exploded = [handle.explode.remote(i) for i in range(20)]
    for r in exploded:
        with pytest.raises(ModelError, match="cannot score"):
            r.result(timeout_s=30)
    assert handle.double.remote(21).result(timeout_s=30) == 42  # the replica serves on


def test_batched_function_deployment(served) -> None:
    _, fn_handle, _ = served
    responses = [fn_handle.remote(i) for i in range(100)]
    results = [r.result(timeout_s=60) for r in responses]
    assert [x for x, _ in results] == list(range(100))
    assert max(n for _, n in results) > 1
