"""Unit tests of request routing in the caller (`serve._data.router`).

`PowerOfTwoChoices` is pure: tested with seeded `random.Random`s. `Router` runs in `asyncio.run(...)`
against a fake controller (whose long poll answers with the `ReplicaSet`s a test pushes)
and fake replica handles whose `handle_request.remote(...)` returns a future the test
completes by hand. Tests advance the loop only by yielding (`asyncio.sleep(0)`), never by
waiting for time to pass, except where the router's own timers are the subject.

Contract under test (module docstring):
- power of two choices over replicas with room (this caller's in-flight count below
  `max_ongoing_requests`): the less loaded of two samples; None if all are full;
- calls wait for the first replica set; `exists=False` fails them with ServeError;
- never more than `max_ongoing_requests` in flight per replica from this router; beyond
  that calls wait FIFO; past `max_queued_requests` they fail at once with
  BackPressureError;
- a replica set update replaces the replicas routed to; while the controller is away the
  last set stays in use;
- a replica that refused a call (ActorUnavailableError: it never ran) is dropped and the call
  retried elsewhere; other actor
  deaths (e.g. a lost connection: the call may have run) reach the caller;
- in-flight slots are released however a call ends.

Both entries are held to it: `Router.call` (a coroutine) and `Router.send` (the no-task
fast path handles use, delivering the outcome to a callback); tests taking the `via`
fixture run once through each.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

import actors
import serve
from actors.system import Update, copy_state
from serve._data.model_routing import PowerOfTwoChoices
from serve._data.router import Router, replica_set_key
from serve.exceptions import BackPressureError, ServeError
from serve.messages import DeploymentId, ReplicaInfo, ReplicaSet

T = TypeVar("T")
DEPLOYMENT = DeploymentId("app", "d")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------
# choose
# ---------------------------------------------------------------------------------------


def choose(replicas: list[ReplicaInfo], in_flight: dict[Any, int], rng: random.Random) -> ReplicaInfo | None:
    return PowerOfTwoChoices(rng).choose(replicas, in_flight)


def infos(*names: str, max_ongoing: int = 10) -> list[ReplicaInfo]:
    return [ReplicaInfo(n, handle=None, max_ongoing_requests=max_ongoing) for n in names]  # type: ignore[arg-type]


def test_choose_with_a_single_replica_returns_it() -> None:
    (a,) = infos("a")
    rng = random.Random(0)
    assert choose([a], {}, rng) is a
    assert choose([a], {"a": 9}, rng) is a


def test_choose_returns_none_when_every_replica_is_full() -> None:
    reps = infos("a", "b", "c", max_ongoing=2)
    assert choose(reps, {"a": 2, "b": 2, "c": 5}, random.Random(0)) is None
    assert choose([], {}, random.Random(0)) is None


def test_choose_only_picks_replicas_with_room() -> None:
    reps = infos("a", "b", "c", "d", max_ongoing=3)
    loads = {"a": 3, "b": 1, "c": 3, "d": 2}
    rng = random.Random(1)
    picked = Counter(choose(reps, loads, rng).replica_id for _ in range(2000))  # type: ignore[union-attr]
    assert set(picked) <= {"b", "d"}
    assert picked["b"] > 0

    only_one = {"a": 3, "b": 3, "c": 0, "d": 3}
    assert all(choose(reps, only_one, rng).replica_id == "c" for _ in range(200))  # type: ignore[union-attr]


def test_choose_honours_each_replicas_own_limit() -> None:
    small, big = ReplicaInfo("small", None, 1), ReplicaInfo("big", None, 100)  # type: ignore[arg-type]
    rng = random.Random(2)
    assert all(choose([small, big], {"small": 1, "big": 50}, rng) is big for _ in range(200))


def test_choose_between_two_always_takes_the_less_loaded() -> None:
    reps = infos("a", "b")
    for seed in range(5):
        rng = random.Random(seed)
        assert all(choose(reps, {"a": 0, "b": 5}, rng).replica_id == "a" for _ in range(500))  # type: ignore[union-attr]
        assert all(choose(reps, {"b": 5}, rng).replica_id == "a" for _ in range(100))  # type: ignore[union-attr]


def test_choose_prefers_the_least_loaded_far_more_than_uniform() -> None:
    n, trials = 10, 20_000
    reps = infos(*(f"r{i}" for i in range(n)), max_ongoing=100)
    loads = {f"r{i}": i for i in range(n)}  # r0 least loaded, r9 most
    rng = random.Random(1234)
    picked = Counter(choose(reps, loads, rng).replica_id for _ in range(trials))  # type: ignore[union-attr]
    uniform = trials / n
    # Two samples, the lower load wins: r0 wins whenever sampled (p = 2/n), r9 never.
    assert picked["r0"] > 1.6 * uniform
    assert picked["r9"] == 0
    assert picked["r0"] > picked["r4"] > picked["r8"]


def test_choose_with_equal_loads_uses_every_replica() -> None:
    reps = infos("a", "b", "c")
    rng = random.Random(3)
    picked = Counter(choose(reps, {}, rng).replica_id for _ in range(3000))  # type: ignore[union-attr]
    assert all(800 < picked[r] < 1200 for r in "abc"), picked


# ---------------------------------------------------------------------------------------
# Fakes for Router
# ---------------------------------------------------------------------------------------


class _Remote:
    """`obj.method.remote(*args)` for a fake: calls `fn`."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn

    def remote(self, *args: Any) -> Any:
        return self._fn(*args)


class FakeRef:
    """What `.remote()` returns: awaitable, and `.future()` as ObjectRef has."""

    def __init__(self, fut: asyncio.Future[Any]) -> None:
        self._fut = fut

    def future(self) -> asyncio.Future[Any]:
        return self._fut

    def __await__(self) -> Any:
        return self._fut.__await__()


class FakeController:
    """Answers the router's long poll with whatever `push` queued (an exception is raised)."""

    def __init__(self) -> None:
        self.listen = _Remote(self._listen)
        self.record_load = _Remote(self._record_load)
        self._answers: asyncio.Queue[Update | BaseException] = asyncio.Queue()
        self.listen_calls: list[tuple[str, int, float]] = []
        self.reports: list[tuple[str, str, float]] = []
        self.reported = asyncio.Event()
        self.polled = asyncio.Event()

    async def _listen(self, key: str, version: int, hold_s: float) -> Update:
        self.listen_calls.append((key, version, hold_s))
        self.polled.set()
        answer = await self._answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def _record_load(self, source: str, deployment: str, ongoing: float) -> FakeRef:
        self.reports.append((source, deployment, ongoing))
        self.reported.set()
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return FakeRef(fut)

    def push(self, answer: Update | BaseException) -> None:
        self._answers.put_nowait(answer)


@dataclass(eq=False)
class Request:
    replica: str
    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    fut: asyncio.Future[Any]
    ctx: Any = None  # the RequestContext the router sent along

    @property
    def pending(self) -> bool:
        return not self.fut.done()

    def succeed(self, value: Any = None) -> None:
        self.fut.set_result(value)

    def fail(self, error: BaseException) -> None:
        self.fut.set_exception(error)


@dataclass(eq=False)
class FakeReplica:
    name: str
    log: list[Request] = field(default_factory=list)  # shared by all replicas of a test: dispatch order

    frozen: bool = False  # a stopped process: answers nothing, pings included

    def __post_init__(self) -> None:
        self.handle_request = _Remote(self._handle_request)
        self.ping = _Remote(self._ping)
        self.requests: list[Request] = []
        self.pings = 0

    def _ping(self) -> FakeRef:
        self.pings += 1
        fut = asyncio.get_running_loop().create_future()
        if not self.frozen:
            fut.set_result(None)
        return FakeRef(fut)

    def _handle_request(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], ctx: Any = None) -> FakeRef:
        req = Request(self.name, method, args, kwargs, asyncio.get_running_loop().create_future(), ctx)
        self.requests.append(req)
        self.log.append(req)
        return FakeRef(req.fut)

    @property
    def in_flight(self) -> int:
        return sum(1 for r in self.requests if r.pending)


_VIA = ["call"]


@pytest.fixture(params=["call", "send"])
def via(request: pytest.FixtureRequest) -> Any:
    """Run the test through `Router.call` and through `Router.send`."""
    _VIA[0] = request.param
    yield request.param
    _VIA[0] = "call"


@dataclass
class Env:
    controller: FakeController
    router: Router
    replicas: dict[str, FakeReplica]
    log: list[Request]
    version: int = 0
    via: str = "call"

    def replica_set(self, names: list[str] | None = None, *, max_ongoing: int = 100, max_queued: int = -1,
                    exists: bool = True, metrics_interval_s: float | None = None, unavailable: str = "") -> Update:
        self.version += 1
        names = list(self.replicas) if names is None else names
        return Update(self.version, ReplicaSet(
            DEPLOYMENT, tuple(ReplicaInfo(n, self.replicas[n], max_ongoing) for n in names),  # type: ignore[arg-type]
            max_queued_requests=max_queued, metrics_interval_s=metrics_interval_s, unavailable=unavailable)
            if exists else None, exists)

    async def apply(self, rs: Update) -> None:
        """Push `rs` and wait until the router took it (it polls again with its version)."""
        self.controller.push(rs)
        await until(lambda: any(v == rs.version for _, v, _ in self.controller.listen_calls),
                    f"the router to take replica set {rs.version}")

    def call(self, *args: Any, method: str = "m", **kwargs: Any) -> asyncio.Future[Any]:
        """One call through the entry under test; a future of its outcome."""
        if self.via == "send":
            out = asyncio.get_running_loop().create_future()
            self.router.send(method, args, kwargs, lambda f: copy_state(f, out))
            return out
        return asyncio.get_running_loop().create_task(self.router.call(method, args, kwargs))

    def pending(self) -> list[Request]:
        return [r for r in self.log if r.pending]

    def dispatched_args(self) -> list[Any]:
        return [r.args[0] for r in self.log]


def make_env(*names: str, seed: int = 0, **router_kw: Any) -> Env:
    controller = FakeController()
    log: list[Request] = []
    replicas = {n: FakeReplica(n, log) for n in names}
    return Env(controller, Router(DEPLOYMENT, controller, rng=random.Random(seed), **router_kw), replicas, log,
               via=_VIA[0])


async def until(cond: Callable[[], Any], what: str, yields: int = 1000) -> None:
    """Yield to the loop until `cond()` holds; fail after `yields` turns (no wall-clock waits)."""
    for _ in range(yields):
        if cond():
            return
        await asyncio.sleep(0)
    pytest.fail(f"never happened: {what}")


async def settle(yields: int = 50) -> None:
    """Let every runnable task run until nothing more can happen without outside input."""
    for _ in range(yields):
        await asyncio.sleep(0)


async def outcome(task: asyncio.Task[T]) -> T:
    """The task's result (or its exception raised), once it finished; fails the test if it never does."""
    await until(task.done, "the call to finish")
    return task.result()


async def outcomes(*tasks: asyncio.Task[Any]) -> list[Any]:
    await until(lambda: all(t.done() for t in tasks), f"{len(tasks)} calls to finish")
    return [t.result() for t in tasks]


async def answer_all(env: Env, tasks: list[asyncio.Task[Any]], answer: Callable[[Request], None]) -> None:
    """Answer every request the router dispatches until all `tasks` finished."""
    for _ in range(1000):
        if all(t.done() for t in tasks):
            return
        await settle(5)
        for r in env.pending():
            answer(r)
    pytest.fail(f"calls never finished: {sum(not t.done() for t in tasks)} left")


async def running_env(*names: str, seed: int = 0, **set_kw: Any) -> Env:
    env = make_env(*names, seed=seed)
    await env.apply(env.replica_set(**set_kw))
    return env


# ---------------------------------------------------------------------------------------
# Router: the replica set
# ---------------------------------------------------------------------------------------


def test_calls_wait_until_the_first_replica_set_arrives(via: str) -> None:
    async def main() -> None:
        env = make_env("a")
        task = env.call(1)
        await settle()
        assert not task.done() and env.log == []
        assert env.controller.listen_calls[0][:2] == (replica_set_key(DEPLOYMENT), -1)

        await env.apply(env.replica_set())
        await until(lambda: env.log, "the waiting call to be dispatched")
        assert env.log[0].replica == "a" and env.log[0].args == (1,) and env.log[0].method == "m"
        env.log[0].succeed("answer")
        assert await outcome(task) == "answer"
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_method_args_and_kwargs_reach_the_replica() -> None:
    async def main() -> None:
        env = await running_env("a")
        task = asyncio.get_running_loop().create_task(env.router.call("predict", (1, 2), {"k": "v"}))
        await until(lambda: env.log, "dispatch")
        req = env.log[0]
        assert (req.method, req.args, req.kwargs) == ("predict", (1, 2), {"k": "v"})
        req.succeed(3)
        assert await outcome(task) == 3
        env.router.close()

    run(main())


def test_the_poll_sends_the_last_version_seen() -> None:
    async def main() -> None:
        env = make_env("a", "b")
        await env.apply(env.replica_set(["a"]))
        await env.apply(env.replica_set(["a", "b"]))
        assert [v for _, v, _ in env.controller.listen_calls] == [-1, 1, 2]
        assert all(k == replica_set_key(DEPLOYMENT) and hold > 0 for k, _, hold in env.controller.listen_calls)
        assert {r.replica_id for r in env.router.replicas} == {"a", "b"}
        env.router.close()

    run(main())


def test_requests_spread_over_replicas(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", "c", seed=7)
        tasks = [env.call(i) for i in range(30)]
        await until(lambda: len(env.log) == 30, "all 30 dispatched")
        per_replica = Counter(r.replica for r in env.log)
        assert set(per_replica) == {"a", "b", "c"}
        assert max(per_replica.values()) - min(per_replica.values()) <= 3, per_replica  # p2c keeps them level
        for r in env.log:
            r.succeed(r.args[0] * 10)
        assert await outcomes(*tasks) == [i * 10 for i in range(30)]

        env.log.clear()
        for i in range(60):  # one at a time: every replica idle each time
            task = env.call(i)
            await until(lambda: env.pending(), "dispatch")
            env.pending()[0].succeed(i)
            assert await outcome(task) == i
        assert set(Counter(r.replica for r in env.log)) == {"a", "b", "c"}
        env.router.close()

    run(main())


def test_a_replica_set_update_that_removes_a_replica_stops_routing_to_it(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", max_ongoing=1)
        first = [env.call(0), env.call(1)]
        await until(lambda: len(env.log) == 2, "one call on each replica")
        on_a = next(r for r in env.log if r.replica == "a")
        task_a, task_b = first[on_a.args[0]], first[1 - on_a.args[0]]

        await env.apply(env.replica_set(["b"], max_ongoing=1))
        assert [r.replica_id for r in env.router.replicas] == ["b"]
        on_a.succeed("from a")  # a call already on the removed replica still completes
        assert await outcome(task_a) == "from a"

        more = [env.call(i) for i in range(2, 8)]
        await answer_all(env, [task_b, *more], lambda r: r.succeed(r.args[0]))
        assert await outcomes(*more) == list(range(2, 8))
        assert [r.replica for r in env.log[2:]] == ["b"] * 6
        env.router.close()

    run(main())


def test_a_replica_set_that_adds_room_releases_every_waiting_call(via: str) -> None:
    async def main() -> None:
        env = make_env("a", "b", "c", "d")
        early = [env.call(i) for i in range(2)]  # before any replica set
        await env.apply(env.replica_set(["a"], max_ongoing=1))
        tasks = [*early, *(env.call(i) for i in range(2, 4))]
        await settle()
        assert len(env.log) == 1 and env.router.load == 4

        await env.apply(env.replica_set(max_ongoing=1))  # three more replicas, nothing completed
        await until(lambda: len(env.log) == 4, "every waiting call dispatched")
        assert sorted(r.replica for r in env.log) == ["a", "b", "c", "d"]
        for r in env.log:
            r.succeed(r.args[0])
        assert sorted(await outcomes(*tasks)) == [0, 1, 2, 3]
        env.router.close()

    run(main())


def test_a_missing_deployment_fails_calls_with_serve_error(via: str) -> None:
    async def main() -> None:
        env = make_env()
        early = env.call(0)  # waiting for the first set
        await settle()
        await env.apply(env.replica_set([], exists=False))
        with pytest.raises(ServeError, match=r"no deployment 'd' in application 'app'") as info:
            await outcome(early)
        assert not isinstance(info.value, BackPressureError)
        with pytest.raises(ServeError, match=r"no deployment 'd' in application 'app'"):
            await outcome(env.call())
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_a_deployment_with_no_replicas_wanted_fails_calls_at_once(via: str) -> None:
    async def main() -> None:
        env = make_env("a")
        await env.apply(env.replica_set(["a"], max_ongoing=1))
        busy, waiting = env.call(0), env.call(1)  # one in flight, one waiting for room
        await until(lambda: env.log, "dispatch")
        await env.apply(env.replica_set([], unavailable="num_replicas is 0"))  # scaled to num_replicas=0
        with pytest.raises(ServeError, match=r"'d' of application 'app' is unavailable: num_replicas is 0"):
            await outcome(waiting)
        with pytest.raises(ServeError, match="num_replicas is 0"):
            await outcome(env.call(2))  # a new call fails at once too
        env.log[0].succeed("done")  # the one in flight still finishes
        assert await outcome(busy) == "done"
        await env.apply(env.replica_set(["a"]))  # scaled up again: served
        task = env.call(3)
        await until(lambda: len(env.log) == 2, "dispatch")
        env.log[1].succeed("ok")
        assert await outcome(task) == "ok" and env.router.load == 0
        env.router.close()

    run(main())


def test_a_deployment_that_appears_later_is_routed_to(via: str) -> None:
    async def main() -> None:
        env = make_env("a")
        await env.apply(env.replica_set([], exists=False))
        with pytest.raises(ServeError):
            await outcome(env.call())
        await env.apply(env.replica_set(["a"]))
        task = env.call(1)
        await until(lambda: env.log, "dispatch")
        env.log[0].succeed("ok")
        assert await outcome(task) == "ok"
        env.router.close()

    run(main())


def test_the_last_replica_set_stays_in_use_while_the_controller_is_away(via: str) -> None:
    async def main() -> None:
        env = await running_env("a")
        polls = len(env.controller.listen_calls)
        env.controller.polled.clear()
        env.controller.push(ConnectionError("controller unreachable"))
        await asyncio.wait_for(env.controller.polled.wait(), 10)  # the router polls again after its backoff
        assert len(env.controller.listen_calls) == polls + 1
        assert env.controller.listen_calls[-1][1] == env.version  # still knows its version
        assert [r.replica_id for r in env.router.replicas] == ["a"]
        task = env.call(1)
        await until(lambda: env.log, "dispatch during the outage")
        env.log[0].succeed("ok")
        assert await outcome(task) == "ok"
        env.router.close()

    run(main())


# ---------------------------------------------------------------------------------------
# Router: limits and queueing
# ---------------------------------------------------------------------------------------


def test_never_more_than_max_ongoing_requests_per_replica(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", max_ongoing=2, seed=3)
        tasks = [env.call(i) for i in range(10)]
        await until(lambda: len(env.log) == 4, "both replicas full")
        await settle()
        assert len(env.log) == 4
        assert {n: rep.in_flight for n, rep in env.replicas.items()} == {"a": 2, "b": 2}
        assert env.router.load == 10  # 4 in flight + 6 waiting

        rng = random.Random(0)
        completed = 0
        while env.pending():
            rng.choice(env.pending()).succeed("done")
            completed += 1
            await settle()
            assert all(rep.in_flight <= 2 for rep in env.replicas.values())
            assert len(env.log) == min(10, completed + 4)
        assert await outcomes(*tasks) == ["done"] * 10
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_queued_calls_are_released_in_fifo_order(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1)
        tasks = []
        for i in range(6):
            tasks.append(env.call(i))
            await settle(5)
        assert env.dispatched_args() == [0]
        assert env.router.load == 6
        while env.pending():
            (req,) = env.pending()
            req.succeed(req.args[0])
            await settle()
        assert env.dispatched_args() == [0, 1, 2, 3, 4, 5]
        assert await outcomes(*tasks) == list(range(6))
        env.router.close()

    run(main())


@pytest.mark.parametrize("max_queued", [0, 1, 3])
def test_past_max_queued_requests_a_call_fails_at_once(max_queued: int, via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", max_ongoing=1, max_queued=max_queued)
        tasks = [env.call(i) for i in range(2 + max_queued)]
        await until(lambda: len(env.log) == 2, "both replicas busy")
        await settle()
        assert env.router.load == 2 + max_queued and not any(t.done() for t in tasks)

        with pytest.raises(BackPressureError, match="max_queued_requests") as info:
            await outcome(env.call("over"))
        assert isinstance(info.value, serve.BackPressureError) and isinstance(info.value, ServeError)
        assert env.router.load == 2 + max_queued  # the refused call left nothing behind

        env.pending()[0].succeed(None)
        await settle()
        extra = env.call("late")  # a place came free
        await settle()
        assert not extra.done() or extra.exception() is None
        while env.pending():
            for r in env.pending():
                r.succeed(None)
            await settle()
        await outcomes(*tasks, extra)
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_without_a_queue_limit_calls_wait_indefinitely(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1, max_queued=-1)
        tasks = [env.call(i) for i in range(200)]
        await settle()
        assert env.router.load == 200 and not any(t.done() for t in tasks)
        env.router.close()

    run(main())


def test_a_newly_arriving_call_does_not_overtake_queued_ones(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1)
        tasks = [env.call("A")]
        await until(lambda: env.log, "A dispatched")
        for name in ("B", "C"):
            tasks.append(env.call(name))
            await settle(5)
        assert env.router.load == 3

        env.log[0].succeed(None)
        tasks.append(env.call("D"))  # arrives as A's slot frees, after B and C queued
        await answer_all(env, tasks, lambda r: r.succeed(None))
        await outcomes(*tasks)
        assert env.dispatched_args() == ["A", "B", "C", "D"]
        env.router.close()

    run(main())


def test_a_cancelled_waiting_call_frees_its_queue_place() -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1, max_queued=1)
        first = env.call(0)
        await until(lambda: env.log, "first dispatched")
        waiting = env.call(1)
        await settle()
        waiting.cancel()
        await settle()
        assert waiting.cancelled()
        again = env.call(2)  # the queue is empty again: this one may wait
        await settle()
        assert not again.done(), f"refused: {again.exception()!r}"
        assert env.router.load == 2
        env.log[0].succeed(None)
        await until(lambda: len(env.log) == 2, "the new waiter dispatched")
        env.log[1].succeed(None)
        await outcomes(first, again)
        env.router.close()

    run(main())


# ---------------------------------------------------------------------------------------
# Router: failures and slots
# ---------------------------------------------------------------------------------------


def test_a_dead_replica_is_dropped_and_the_call_retried_on_another(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", seed=5)
        task = env.call(1)
        await until(lambda: env.log, "first attempt")
        dead = env.log[0].replica
        env.log[0].fail(actors.ActorUnavailableError(f"actor {dead} is dead"))
        await until(lambda: len(env.log) == 2, "the retry")
        assert env.log[1].replica != dead and env.log[1].args == (1,)
        assert [r.replica_id for r in env.router.replicas] != [] and dead not in {
            r.replica_id for r in env.router.replicas}
        env.log[1].succeed("second try")
        assert await outcome(task) == "second try"
        assert env.router.load == 0

        for i in range(10):  # the dead one gets nothing more
            t = env.call(i)
            await until(lambda: env.pending(), "dispatch")
            env.pending()[0].succeed(None)
            await outcome(t)
        assert all(r.replica != dead for r in env.log[1:])
        env.router.close()

    run(main())


def test_a_lost_connection_reaches_the_caller_without_a_retry(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b")
        task = env.call(1)
        await until(lambda: env.log, "first attempt")
        env.log[0].fail(actors.ActorDiedError("lost the connection to the actor; the call may have run"))
        with pytest.raises(actors.ActorDiedError, match="lost the connection"):
            await outcome(task)
        await settle()
        assert len(env.log) == 1, "a call that may have run was retried"
        assert env.router.load == 0
        lost = env.log[0].replica
        assert lost not in {r.replica_id for r in env.router.replicas}, "the dead replica was kept"
        for i in range(6):  # the next calls go elsewhere
            t = env.call(i)
            await until(lambda: env.pending(), "dispatch")
            env.pending()[0].succeed(None)
            await outcome(t)
        assert all(r.replica != lost for r in env.log[1:])
        env.router.close()

    run(main())


def test_retries_of_dead_replicas_are_bounded(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", "c", "d", "e")
        task = env.call(1)
        for _ in range(5):
            await settle()
            if task.done():
                break
            (req,) = env.pending()
            req.fail(actors.ActorUnavailableError(f"actor {req.replica} is dead"))
        await settle()
        assert task.done(), "the call kept retrying"
        with pytest.raises(actors.ActorDiedError, match="is dead"):
            await outcome(task)
        assert len({r.replica for r in env.log}) == len(env.log) >= 2  # each retry on another replica
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_other_errors_reach_the_caller_without_a_retry(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b")
        task = env.call(1)
        await until(lambda: env.log, "dispatch")
        env.log[0].fail(ValueError("user code raised"))
        with pytest.raises(ValueError, match="user code raised"):
            await outcome(task)
        await settle()
        assert len(env.log) == 1
        assert {r.replica_id for r in env.router.replicas} == {"a", "b"}  # not dropped
        env.router.close()

    run(main())


def test_failed_calls_release_their_slots(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1, max_queued=-1)
        tasks = [env.call(i) for i in range(50)]
        await answer_all(env, tasks, lambda r: r.fail(RuntimeError(f"failed {r.args[0]}")))
        for i, t in enumerate(tasks):
            with pytest.raises(RuntimeError, match=f"failed {i}$"):
                t.result()
        assert env.router.load == 0
        ok = env.call("after")
        await until(lambda: env.pending(), "the router still routes")
        env.pending()[0].succeed("fine")
        assert await outcome(ok) == "fine"
        env.router.close()

    run(main())


def test_a_cancelled_call_in_flight_releases_its_slot() -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1)
        first = env.call(0)
        await until(lambda: env.log, "dispatch")
        second = env.call(1)
        await settle()
        first.cancel()
        await until(lambda: len(env.log) == 2, "the waiter takes the freed slot")
        assert first.cancelled()
        env.log[1].succeed("ok")
        assert await outcome(second) == "ok"
        assert env.router.load == 0
        env.router.close()

    run(main())


def test_actor_death_errors_release_their_slots(via: str) -> None:
    async def main() -> None:
        env = await running_env("a", "b", max_ongoing=1)
        tasks = [env.call(i) for i in range(2)]
        await until(lambda: len(env.log) == 2, "both dispatched")
        for r in list(env.log):
            r.fail(actors.ActorDiedError("lost the connection"))
        for t in tasks:
            with pytest.raises(actors.ActorDiedError):
                await outcome(t)
        assert env.router.load == 0
        await env.apply(env.replica_set(["a", "b"], max_ongoing=1))  # the controller still lists them
        more = [env.call(i) for i in range(2)]
        await until(lambda: len(env.pending()) == 2, "both replicas usable again: no leaked slots")
        for r in env.pending():
            r.succeed(None)
        await outcomes(*more)
        env.router.close()

    run(main())


# ---------------------------------------------------------------------------------------
# Router: load reports
# ---------------------------------------------------------------------------------------


def test_load_is_reported_when_the_deployment_autoscales() -> None:
    async def main() -> None:
        controller = FakeController()
        replica = FakeReplica("a")
        controller.push(Update(1, ReplicaSet(DEPLOYMENT, (ReplicaInfo("a", replica, 1),),  # type: ignore[arg-type]
                                             metrics_interval_s=0.01)))
        router = Router(DEPLOYMENT, controller, rng=random.Random(0))
        tasks = [asyncio.get_running_loop().create_task(router.call("m", (i,), {})) for i in range(3)]

        async def report_of(value: float) -> tuple[str, str, float]:
            while True:
                controller.reported.clear()
                await controller.reported.wait()
                if controller.reports[-1][2] == value:
                    return controller.reports[-1]

        source, deployment, _ = await asyncio.wait_for(report_of(3.0), 5)  # 1 in flight + 2 waiting
        assert deployment == DEPLOYMENT and isinstance(source, str) and source
        for _ in range(1000):
            if all(t.done() for t in tasks):
                break
            for r in replica.requests:
                if r.pending:
                    r.succeed(None)
            await settle(5)
        await asyncio.wait_for(report_of(0.0), 5)
        assert {s for s, _, _ in controller.reports} == {source}  # one source per router
        router.close()

    run(main())


# ---------------------------------------------------------------------------------------
# Router.send: the fast path of handles
# ---------------------------------------------------------------------------------------


def test_send_dispatches_at_once_when_a_replica_has_room() -> None:
    async def main() -> None:
        env = await running_env("a", "b")
        delivered: list[asyncio.Future[Any]] = []
        env.router.send("m", (1,), {}, delivered.append)
        assert len(env.log) == 1, "the request should leave within send(), without a task"
        env.log[0].succeed("done")
        await until(lambda: delivered, "delivery")
        assert delivered[0].result() == "done" and env.router.load == 0
        env.router.close()

    run(main())


def test_cancelling_what_send_returns_abandons_the_request() -> None:
    async def main() -> None:
        env = await running_env("a", max_ongoing=1)
        delivered: list[asyncio.Future[Any]] = []
        in_flight = env.router.send("m", (0,), {}, delivered.append)
        waiting = env.router.send("m", (1,), {}, delivered.append)  # no room: waits on a task
        await settle()
        assert len(env.log) == 1
        waiting.cancel()
        in_flight.cancel()
        await until(lambda: len(delivered) == 2, "both outcomes")
        assert all(f.cancelled() for f in delivered)
        assert env.router.load == 0 and len(env.log) == 1, "the abandoned waiter was still dispatched"
        env.router.close()

    run(main())


# ---------------------------------------------------------------------------------------
# Router: frozen replicas (the router's own timers are the subject: short real waits)
# ---------------------------------------------------------------------------------------


def test_a_frozen_replica_is_set_aside_until_it_answers_again(via: str) -> None:
    async def main() -> None:
        env = make_env("a", "b", stall_s=0.05, ping_timeout_s=0.05)
        await env.apply(env.replica_set())
        env.replicas["a"].frozen = True
        stuck = []
        while not any(r.replica == "a" for r in env.log):  # until one request is stuck on "a"
            stuck.append(env.call(len(env.log)))
            await settle()
            for r in env.pending():
                if r.replica == "b":
                    r.succeed(r.args[0])
        for _ in range(200):  # its ping goes unanswered: set aside
            await asyncio.sleep(0.01)
            if env.replicas["a"].pings and env.router._frozen:
                break
        assert env.router._frozen == {"a"}
        before = len(env.replicas["a"].requests)
        calls = [env.call(i) for i in range(20)]
        await settle()
        assert len(env.replicas["a"].requests) == before  # every new request went to "b"
        for r in env.pending():
            if r.replica == "b":
                r.succeed(r.args[0])
        assert await outcomes(*calls) == list(range(20))
        env.replicas["a"].frozen = False  # thawed: its next ping answers, it is routed to again
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not env.router._frozen:
                break
        assert not env.router._frozen
        more = [env.call(i) for i in range(20)]
        await settle()
        assert len(env.replicas["a"].requests) > before
        for r in env.pending():
            r.succeed(r.args[0])
        await outcomes(*more, *stuck)
        env.router.close()

    run(main())


def test_a_busy_replica_that_answers_its_ping_is_not_set_aside() -> None:
    async def main() -> None:
        env = make_env("a", stall_s=0.05, ping_timeout_s=0.05)
        await env.apply(env.replica_set())
        slow = env.call(1)  # a long request: no progress, but the replica's loop answers
        await until(lambda: env.log, "dispatch")
        for _ in range(100):
            await asyncio.sleep(0.01)
            if env.replicas["a"].pings >= 2:
                break
        assert env.replicas["a"].pings >= 2 and not env.router._frozen
        env.log[0].succeed("done")
        assert await outcome(slow) == "done"
        env.router.close()

    run(main())
