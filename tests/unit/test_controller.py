"""Unit tests of the whole controller (`serve._control.controller`) against a fake `ControllerIO`.

No processes: replicas and proxies are fake handles whose calls the test (or the fake, for
calls it is told to answer by itself) completes; the head is a dict. Covered: a deploy
rolled out and published on the long poll (replica sets, routes, status), checkpoints
written only on change, a restarted controller recovering deployments and adopting
replicas and proxies in the state they had, deletion ending a replica set, and the
orderly shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from serve._config import DeploymentConfig, HTTPOptions
from serve._control.checkpoint import Checkpoint, DeploymentRecord, ReplicaRecord, SettingsRecord
from serve._control.controller import ServeController
from serve._control.io import RunningProxy
from serve._control.proxy_state import NodeView
from serve._data.client import STATUS_KEY
from serve._data.http_proxy import ROUTES_KEY
from serve._data.router import replica_set_key
from serve._names import CHECKPOINT_KEY, RECORDS_PREFIX, SETTINGS_KEY, deployment_record_key
from serve.exceptions import DeploymentTooLargeError, ServeError
from serve.messages import (
    DeploymentId,
    DeploymentStatus,
    DeploymentTarget,
    ProxyStatus,
    ReplicaId,
    ReplicaState,
    ServeSettings,
)

T = TypeVar("T")
D = DeploymentId("app", "d")
HEAD = NodeView("n1", "127.0.0.1", True, True)
N2 = NodeView("n2", "127.0.0.2", True, False)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class _NotDone(Exception):
    pass


@dataclass(frozen=True)
class FakeActorId:
    hex: str


@dataclass(eq=False)
class FakeHandle:
    what: str  # "replica" | "proxy"
    key: Any  # the replica id, or the node
    actor_id: FakeActorId = field(default_factory=lambda: FakeActorId(secrets.token_hex(4)))
    killed: bool = False


@dataclass(eq=False)
class FakePending:
    handle: FakeHandle
    method: str
    args: tuple[Any, ...]
    _done: bool = False
    _value: Any = None
    _error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Any:
        if not self._done:
            raise _NotDone(self.method)
        if self._error is not None:
            raise self._error
        return self._value

    def succeed(self, value: Any = None) -> None:
        self._done, self._value = True, value

    def __await__(self) -> Any:
        async def wait() -> Any:
            while not self._done:
                await asyncio.sleep(0)
            return self.result()

        return wait().__await__()


class FakeActors:
    """Starts, calls and kills fake actors; answers the methods in `auto` by itself."""

    def __init__(self, what: str, auto: dict[str, Callable[[FakeHandle], Any]]) -> None:
        self.what = what
        self.auto = auto
        self.started: list[FakeHandle] = []
        self.calls: list[FakePending] = []
        self.killed: list[FakeHandle] = []

    def call(self, handle: FakeHandle, method: str, *args: Any) -> FakePending:
        pending = FakePending(handle, method, args)
        if method in self.auto:
            pending.succeed(self.auto[method](handle))
        self.calls.append(pending)
        return pending

    def kill(self, handle: FakeHandle) -> FakePending:
        handle.killed = True
        self.killed.append(handle)
        done = FakePending(handle, "kill", ())
        done.succeed()
        return done

    def pending(self, method: str) -> list[FakePending]:
        return [c for c in self.calls if c.method == method and not c.done() and not c.handle.killed]

    def live(self) -> list[FakeHandle]:
        return [h for h in self.started if not h.killed]


class FakeReplicas(FakeActors):
    def start(self, target: DeploymentTarget, replica_id: ReplicaId) -> FakeHandle:
        handle = FakeHandle("replica", replica_id)
        self.started.append(handle)
        return handle

    def placement(self, handle: FakeHandle) -> FakePending:
        return FakePending(handle, "placement", ())  # never answered


class FakeProxies(FakeActors):
    def start(self, node: NodeView, http_options: Any) -> FakeHandle:
        handle = FakeHandle("proxy", node)
        self.started.append(handle)
        return handle


class FakeIO:
    """The head as a dict and a node list; replicas and proxies as fake actors."""

    def __init__(self, nodes: list[NodeView] | None = None) -> None:
        self.replicas = FakeReplicas("replica", {"check_health": lambda h: True,
                                                 "prepare_for_shutdown": lambda h: 0})
        self.proxies = FakeProxies("proxy", {"ready": lambda h: f"http://{h.key.ip}:8000",
                                             "start_draining": lambda h: None, "drain": lambda h: None})
        self.node_list = list(nodes or [HEAD])
        self.kv: dict[str, bytes] = {}
        self.checkpoints = 0  # record writes
        self.cap = 16 * 2**20  # the head's cap on a KV value, enforced as the head does
        self.kv_down = False  # the head does not answer KV calls
        self.settings = ServeSettings()
        self.death_listeners: list[Callable[[Any, str], None]] = []

    async def nodes(self) -> list[NodeView]:
        return list(self.node_list)

    async def kv_get(self, key: str) -> bytes | None:
        return self.kv.get(key)

    async def kv_put(self, key: str, blob: bytes) -> None:
        if self.kv_down:
            raise TimeoutError("the head did not answer")
        if len(blob) > self.cap:
            raise ValueError(f"the value for key {key!r} takes {len(blob):,} bytes; the head's KV store holds at "
                             f"most {self.cap:,} per value")
        self.kv[key] = blob
        self.checkpoints += key.startswith(RECORDS_PREFIX)

    async def kv_delete(self, key: str) -> None:
        if self.kv_down:
            raise TimeoutError("the head did not answer")
        self.kv.pop(key, None)

    async def kv_keys(self, prefix: str) -> list[str]:
        return [k for k in self.kv if k.startswith(prefix)]

    async def max_value_bytes(self) -> int:
        return self.cap

    async def publish_summary(self, blob: bytes) -> None:
        await self.kv_put(STATUS_KEY, blob)

    async def drop_records(self, timeout_s: float) -> None:
        self.kv.clear()

    async def find_replica(self, replica_id: ReplicaId) -> FakeHandle | None:
        return next((h for h in self.replicas.live() if h.key == replica_id), None)

    async def running_proxies(self) -> list[RunningProxy]:
        return [RunningProxy(h.key.node_id, h) for h in self.proxies.live()]

    def on_actor_death(self, callback: Callable[[Any, str], None]) -> None:
        self.death_listeners.append(callback)

    def die(self, handle: FakeHandle, cause: str) -> None:
        """The head reports the actor of `handle` dead."""
        for callback in self.death_listeners:
            callback(handle.actor_id, cause)


def target(name: str = "d", n: int = 2, version: str = "v1", route: str | None = "/d") -> DeploymentTarget:
    return DeploymentTarget(name, "app", version, b"code", DeploymentConfig(num_replicas=n), route, False, True)


async def controller_on(io: FakeIO, location: str = "HeadOnly") -> ServeController:
    c = ServeController(http_options={"location": location}, io=io, clock=_Clock(), run_loop=False)
    await c.ready()
    return c


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def step(c: ServeController, dt: float = 0.1) -> None:
    c.clock.now += dt  # type: ignore[attr-defined]
    await c.step(c.clock())


def answer_ready(io: FakeIO) -> None:
    for p in io.replicas.pending("ready"):
        p.succeed({"pid": 1})


async def healthy(c: ServeController, io: FakeIO) -> None:
    """Step until the deployments' replicas answered ready and everything is HEALTHY."""
    for _ in range(20):
        answer_ready(io)
        await step(c)
        st = await c.status()
        deps = [d for a in st["applications"].values() for d in a["deployments"].values()]
        if deps and all(d["status"] == DeploymentStatus.HEALTHY for d in deps):
            return
    pytest.fail(f"never healthy: {await c.status()}")


# ---------------------------------------------------------------------------------------


def test_num_replicas_zero_tells_routers_and_the_status_that_calls_fail_at_once() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=0)])
        await healthy(c, io)
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert rs.unavailable.startswith("num_replicas is 0 and there is no autoscaling_config") and rs.replicas == ()
        d = (await c.status())["applications"]["app"]["deployments"]["d"]
        assert "num_replicas is 0 and there is no autoscaling_config" in d["message"]
        await c.deploy([target(n=1, version="v2")])
        await healthy(c, io)
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert not rs.unavailable and len(rs.replicas) == 1
        assert (await c.status())["applications"]["app"]["deployments"]["d"]["message"] == ""

    run(main())


def test_a_replica_the_head_reports_dead_is_replaced_at_once_not_at_its_next_health_check() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=2)])
        await healthy(c, io)
        before = (await c.listen(replica_set_key(D), -1, 0.0))
        victim = before.value.replicas[0]
        io.die(victim.handle, "its worker process was killed (SIGKILL)")
        # At once, with no step of the clock: out of the routing set, a replacement starting.
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert victim.replica_id not in {r.replica_id for r in rs.replicas} and len(rs.replicas) == 1
        assert victim.handle.killed and len(io.replicas.started) == 3
        d = (await c.status())["applications"]["app"]["deployments"]["d"]
        assert f"replica {victim.replica_id} died: its worker process was killed" in d["message"]
        io.die(FakeHandle("replica", "someone else"), "not ours")  # another actor's death changes nothing
        assert len(io.replicas.started) == 3
        await healthy(c, io)
        assert len((await c.listen(replica_set_key(D), -1, 0.0)).value.replicas) == 2

    run(main())


def test_a_node_that_joins_gets_a_replica_moved_from_a_crowded_node() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=2)])
        for p in io.replicas.pending("ready"):
            p.succeed({"pid": 1, "node_id": "n1"})  # both on the head node (the only one)
        await healthy(c, io)
        assert len(io.replicas.started) == 2
        io.node_list.append(N2)
        await step(c, 1.0)  # the controller re-reads the nodes: n2 joined
        assert len(io.replicas.started) == 3  # a replacement, before anything stops
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert len(rs.replicas) == 2  # both still serve meanwhile
        for p in io.replicas.pending("ready"):
            p.succeed({"pid": 2, "node_id": "n2"})
        for _ in range(5):
            await step(c)
        await healthy(c, io)
        assert [h.killed for h in io.replicas.started[:2]].count(True) == 1  # one of the crowded two drained
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert len(rs.replicas) == 2 and io.replicas.started[2].key in {r.replica_id for r in rs.replicas}
        io.node_list.append(NodeView("n3", "127.0.0.3", True, False))
        await step(c, 1.0)  # one replica per node already: nothing moves
        assert len(io.replicas.started) == 3

    run(main())


def test_a_deploy_is_rolled_out_and_published_on_the_long_poll() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        first = await c.listen(replica_set_key(D), -1, 0.0)
        assert not first.exists  # no such deployment yet: routers fail their calls
        waiter = asyncio.ensure_future(c.listen(replica_set_key(D), first.version, 30.0))
        assert await c.deploy([target()]) == {D: True}
        assert len(io.replicas.started) == 2 and len(io.replicas.pending("ready")) == 2
        await healthy(c, io)
        update = await asyncio.wait_for(waiter, 5)  # woken by the change, not by its hold time
        assert update.exists and len(update.value.replicas) in (1, 2)
        rs = (await c.listen(replica_set_key(D), -1, 0.0)).value
        assert sorted(r.replica_id for r in rs.replicas) == sorted(h.key for h in io.replicas.started)
        routes = (await c.listen(ROUTES_KEY, -1, 0.0)).value
        assert routes.routes == {"/d": D}
        st = (await c.listen(STATUS_KEY, -1, 0.0)).value
        assert st["applications"]["app"]["status"] == "RUNNING"
        assert st["proxies"]["n1"]["state"] == ProxyStatus.HEALTHY
        assert await c.deploy([target()]) == {D: False}  # same version and config: a no-op

    run(main())


def test_a_checkpoint_is_written_on_changes_only() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target()])
        await healthy(c, io)
        written = io.checkpoints
        for _ in range(10):
            await step(c, 1.0)  # health checks come and go; membership stays
        assert io.checkpoints == written
        record = DeploymentRecord.loads(io.kv[deployment_record_key(D)])
        assert record.target.name == "d" and not record.deleting
        assert {r.state for r in record.replicas} == {ReplicaState.RUNNING}
        await c.deploy([target(n=3)])  # answers once the new target is saved
        assert io.checkpoints > written
        assert DeploymentRecord.loads(io.kv[deployment_record_key(D)]).target.config.num_replicas == 3

    run(main())


def big(name: str, size: int, n: int = 2) -> DeploymentTarget:
    return DeploymentTarget(name, "app", "v1", b"code", DeploymentConfig(num_replicas=n, user_config={"x": "a" * size}),
                            f"/{name}", False, True)


def test_each_deployment_has_its_own_record_so_large_ones_survive_a_restart_under_the_cap() -> None:
    async def main() -> None:
        io = FakeIO()
        io.cap = 300_000  # two 200 KB user_configs: over the cap together, under it each
        c = await controller_on(io)
        for name in ("e0", "e1"):
            await c.deploy([big(name, 200_000)])
        await healthy(c, io)
        for _ in range(5):
            await step(c)
        records = {k: v for k, v in io.kv.items() if k.startswith(RECORDS_PREFIX)}
        assert set(records) == {SETTINGS_KEY, *(deployment_record_key(DeploymentId("app", n)) for n in ("e0", "e1"))}
        assert all(len(v) < 300_000 for v in records.values())
        # One copy of the user_config per record, whatever the number of replicas.
        assert all(len(v) < 250_000 for v in records.values())
        assert "summary" not in io.kv and STATUS_KEY in io.kv  # the summary is written too
        replicas = {h.key for h in io.replicas.live()}
        reconfigured = [p for p in io.replicas.calls if p.method == "reconfigure"]

        c2 = await controller_on(io)  # the controller restarted: both deployments, replicas adopted
        assert set(c2.deployments) == {DeploymentId("app", "e0"), DeploymentId("app", "e1")}
        assert {r for s in c2.deployments.values() for r in s.replicas} == replicas
        assert all(r.user_config == {"x": "a" * 200_000} for s in c2.deployments.values() for r in s.replicas.values())
        await healthy(c2, io)
        assert len(io.replicas.started) == 4  # nothing restarted, nothing reconfigured
        assert [p for p in io.replicas.calls if p.method == "reconfigure"] == reconfigured

    run(main())


def test_a_deployment_whose_record_is_over_the_cap_is_refused_at_deploy_before_anything_changes() -> None:
    async def main() -> None:
        io = FakeIO()
        io.cap = 300_000
        c = await controller_on(io)
        await c.deploy([target(n=1)])
        await healthy(c, io)
        started, kv = len(io.replicas.started), dict(io.kv)
        with pytest.raises(DeploymentTooLargeError, match=r"deployment 'e0' of application 'app': user_config too "
                                                          r"large: 400,0\d\d bytes .*at most 300,000 bytes per value.*"
                                                          r"Load big data in the constructor instead"):
            await c.deploy([big("e0", 400_000)])
        with pytest.raises(DeploymentTooLargeError):  # in an application with a deployment that fits
            await c.deploy_apps({"app": [target(n=2), big("e1", 400_000)]})
        assert set(c.deployments) == {D} and c.deployments[D].target.config.num_replicas == 1
        assert len(io.replicas.started) == started and io.kv == kv
        await step(c)
        assert len(io.replicas.started) == started

    run(main())


def test_a_failed_record_write_stops_nothing_and_is_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=1)])
        await healthy(c, io)
        refused: list[str] = []
        put = io.kv_put

        async def refusing(key: str, blob: bytes) -> None:
            if key.startswith(RECORDS_PREFIX) and refusing.on:  # type: ignore[attr-defined]
                refused.append(key)
                raise TimeoutError("the head did not answer")
            await put(key, blob)

        refusing.on = True  # type: ignore[attr-defined]
        io.kv_put = refusing  # type: ignore[method-assign]
        with pytest.raises(ServeError, match=r"app#d was made but could not be saved.*TimeoutError"):
            await c.deploy([target(n=3)])
        for _ in range(30):  # the roll-out goes on, and the summary follows it
            answer_ready(io)
            await step(c)
        st = (await c.status())["applications"]["app"]["deployments"]["d"]
        assert st["status"] == DeploymentStatus.HEALTHY and st["replicas"] == {ReplicaState.RUNNING: 3}
        assert json.loads(io.kv[STATUS_KEY])[str(D)]["replicas"] == {"RUNNING": 3}
        assert 1 < len(refused) <= 6  # retried (once a second: 3 s of ticks), not every tick
        errors = [r for r in caplog.records if "could not save" in r.getMessage()]
        assert len(errors) == 1, [r.getMessage() for r in errors]  # once per change of the error
        refusing.on = False  # type: ignore[attr-defined]
        await step(c, 1.0)
        record = DeploymentRecord.loads(io.kv[deployment_record_key(D)])
        assert record.target.config.num_replicas == 3 and len(record.replicas) == 3
        assert any(f"saved {deployment_record_key(D)}" in r.getMessage() for r in caplog.records)

    with caplog.at_level(logging.INFO, logger="serve._control.records"):
        run(main())


def test_a_deploy_answers_once_its_target_is_saved_though_replicas_change_during_the_write() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        put = io.kv_put

        async def slow(key: str, blob: bytes) -> None:
            await put(key, blob)
            answer_ready(io)
            c._reconcile(c.clock())  # meanwhile replicas became RUNNING: the record is due again

        io.kv_put = slow  # type: ignore[method-assign]
        assert await c.deploy([target(n=2)]) == {D: True}
        assert DeploymentRecord.loads(io.kv[deployment_record_key(D)]).target.config.num_replicas == 2
        io.kv_put = put  # type: ignore[method-assign]
        await step(c, 1.0)  # and the loop writes the replicas' new states
        assert {r.state for r in DeploymentRecord.loads(io.kv[deployment_record_key(D)]).replicas} == {
            ReplicaState.RUNNING}

    run(main())


def test_a_delete_answers_once_saved_as_deleting_even_if_the_deployment_goes_during_the_write() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=1)])
        await healthy(c, io)
        put = io.kv_put

        async def slow(key: str, blob: bytes) -> None:
            await put(key, blob)
            if key == deployment_record_key(D) and DeploymentRecord.loads(blob).deleting:
                c._reconcile(c.clock())  # meanwhile its replica drained: the deployment is gone

        io.kv_put = slow  # type: ignore[method-assign]
        await c.delete([D])  # durable: a restarted controller would finish the deletion
        assert D not in c.deployments and deployment_record_key(D) in io.kv
        await step(c)
        assert deployment_record_key(D) not in io.kv

    run(main())


def test_the_checkpoint_of_an_older_controller_is_read_then_written_as_records() -> None:
    async def main() -> None:
        io = FakeIO()
        t = target(n=1)
        rid = ReplicaId(D, "abc123")
        io.replicas.started.append(FakeHandle("replica", rid))
        old = Checkpoint((t,), frozenset(), {D: (ReplicaRecord(rid, "v1", None, ReplicaState.RUNNING),)},
                         HTTPOptions.of({"location": "EveryNode"}))
        io.kv[CHECKPOINT_KEY] = old.dumps()
        c = await controller_on(io, "HeadOnly")
        assert c.http_options.location == "EveryNode" and set(c.deployments[D].replicas) == {rid}
        await healthy(c, io)
        await step(c)
        assert CHECKPOINT_KEY not in io.kv  # converted, then deleted
        assert DeploymentRecord.loads(io.kv[deployment_record_key(D)]).replicas[0].replica_id == rid
        assert SettingsRecord.loads(io.kv[SETTINGS_KEY]).http_options.location == "EveryNode"
        c2 = await controller_on(io, "HeadOnly")  # and read back as records
        assert c2.http_options.location == "EveryNode" and set(c2.deployments[D].replicas) == {rid}
        io.kv[CHECKPOINT_KEY] = old.dumps()  # left over by a controller killed before it deleted it
        c3 = await controller_on(io, "HeadOnly")
        assert set(c3.deployments[D].replicas) == {rid}  # the records are in force
        await step(c3)
        assert CHECKPOINT_KEY not in io.kv

    run(main())


def test_a_restarted_controller_adopts_replicas_and_proxies_in_their_states() -> None:
    async def main() -> None:
        io = FakeIO([HEAD, N2])
        c = await controller_on(io, "EveryNode")
        await c.deploy([target(n=2)])
        await healthy(c, io)
        for _ in range(3):
            await step(c)
        before = {h.key for h in io.replicas.live()}
        proxies_before = list(io.proxies.live())
        assert len(proxies_before) == 2
        # A third replica still in its constructor when the controller dies:
        await c.deploy([target(n=3)])
        await step(c)
        starting = [h for h in io.replicas.live() if h.key not in before]
        assert len(starting) == 1
        # One running replica died with the controller.
        dead = next(h for h in io.replicas.live() if h.key in before)
        dead.killed = True
        io.replicas.calls.clear()

        c2 = await controller_on(io, "HeadOnly")  # the checkpoint's options win over the new ones'
        assert c2.http_options.location == "EveryNode"
        state = c2.deployments[D]
        known = before | {starting[0].key}
        adopted = {r.replica_id: r.state for r in state.replicas.values() if r.replica_id in known}
        assert adopted == {**{k: ReplicaState.RUNNING for k in before if k != dead.key},
                           starting[0].key: ReplicaState.STARTING}
        asked = [p.handle for p in io.replicas.pending("ready")]
        assert starting[0] in asked and all(h.key not in before for h in asked)  # asked again; plus the replacement
        rs = (await c2.listen(replica_set_key(D), -1, 0.0)).value
        assert [r.replica_id for r in rs.replicas] == [k for k in before if k != dead.key]  # still routed
        assert {e.handle for e in c2.proxies.proxies.values()} == set(proxies_before)  # adopted, not restarted
        await healthy(c2, io)
        assert len(state.running()) == 3  # the dead one replaced
        assert len(io.proxies.started) == 2

    run(main())


def test_deleting_a_deployment_ends_its_replica_set() -> None:
    async def main() -> None:
        io = FakeIO()
        c = await controller_on(io)
        await c.deploy([target(n=1)])
        await healthy(c, io)
        known = await c.listen(replica_set_key(D), -1, 0.0)
        await c.delete([D])
        for _ in range(5):
            await step(c)
        update = await c.listen(replica_set_key(D), known.version, 0.0)
        assert not update.exists
        assert (await c.listen(ROUTES_KEY, -1, 0.0)).value.routes == {}
        assert all(h.killed for h in io.replicas.started)

    run(main())


def test_shutdown_drains_proxies_deletes_everything_and_drops_the_records() -> None:
    async def main() -> None:
        io = FakeIO()
        c = ServeController(http_options={"location": "HeadOnly"}, io=io, run_loop=True)
        await c.ready()
        await c.deploy([target(n=2)])
        for _ in range(200):
            answer_ready(io)
            st = await c.status()
            if st["applications"]["app"]["status"] == "RUNNING" and st["proxies"]["n1"]["state"] == "HEALTHY":
                break
            await asyncio.sleep(0.02)
        assert await asyncio.wait_for(c.shutdown(5.0), 10) is True
        methods = [p.method for p in io.proxies.calls]
        assert methods.index("start_draining") < methods.index("drain")
        assert all(h.killed for h in io.replicas.started) and all(h.killed for h in io.proxies.started)
        assert io.kv == {}
        assert [p.method for p in io.replicas.calls].count("prepare_for_shutdown") == 2

    run(main())
