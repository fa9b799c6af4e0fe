"""Unit tests of the head's actor table (`cluster._actor_table`).

Contract: the state machine PENDING -> ALIVE -> RESTARTING -> ALIVE -> DEAD with a
restart budget (-1: unlimited); events of an older incarnation are ignored; a requested
kill prevents restarts; names are unique per namespace among live actors and freed at
death; every change bumps a global version and `changed_since(v)` returns exactly the
records changed after `v`.
"""

from __future__ import annotations

import pytest

from actors.messages import ActorId, ActorOptions, ActorSpec, ActorState, JobId, NodeId
from cluster._actor_table import ActorRecord, ActorTable
from cluster.exceptions import NameTakenError

NODE_A = NodeId("node-a")
NODE_B = NodeId("node-b")


def make_spec(*, name: str | None = None, max_restarts: int = 0, job_id: JobId | None = None,
              lifetime: str | None = None, actor_id: str | None = None) -> ActorSpec:
    opts = ActorOptions(name=name, lifetime=lifetime, max_restarts=max_restarts, num_cpus=1.0)
    return ActorSpec(ActorId(actor_id) if actor_id else ActorId.new(), "Counter", "tests.fake", b"payload", opts,
                     "tcp://127.0.0.1:5000", job_id, ("incr", "get"), ("aincr",))


def alive(table: ActorTable, spec: ActorSpec, namespace: str = "default", node: NodeId = NODE_A) -> ActorRecord:
    """Add an actor, place it and report its worker started (incarnation 0)."""
    rec = table.add(spec, namespace)
    table.placed(rec, node)
    assert table.started(spec.actor_id, 0, "tcp://10.0.0.1:7000", 1234, node)
    return rec


# -- the state machine ----------------------------------------------------------------------


def test_add_creates_a_pending_record() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=3)
    rec = table.add(spec, "ns")
    assert rec.state is ActorState.PENDING
    assert rec.incarnation == 0
    assert rec.restarts_left == 3
    assert rec.node_id is None and rec.address is None and rec.pid is None
    assert table.get(spec.actor_id) is rec
    assert rec.actor_id == spec.actor_id


def test_full_lifecycle() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    rec = table.add(spec, "default")

    table.placed(rec, NODE_A)
    assert rec.node_id == NODE_A
    assert rec.state is ActorState.PENDING

    assert table.started(spec.actor_id, 0, "tcp://a:1", 11, NODE_A)
    assert (rec.state, rec.address, rec.pid, rec.node_id) == (ActorState.ALIVE, "tcp://a:1", 11, NODE_A)

    assert table.exited(spec.actor_id, 0, "worker crashed") is rec
    assert rec.state is ActorState.RESTARTING
    assert rec.incarnation == 1
    assert rec.restarts_left == 0
    assert rec.death_cause == "worker crashed"
    assert (rec.address, rec.pid, rec.node_id) == (None, None, None)

    table.placed(rec, NODE_B)
    assert table.started(spec.actor_id, 1, "tcp://b:2", 22, NODE_B)
    assert (rec.state, rec.address, rec.pid, rec.node_id) == (ActorState.ALIVE, "tcp://b:2", 22, NODE_B)

    assert table.exited(spec.actor_id, 1, "crashed again") is rec
    assert rec.state is ActorState.DEAD
    assert rec.incarnation == 1
    assert rec.death_cause == "crashed again"
    assert (rec.address, rec.pid, rec.node_id) == (None, None, None)


def test_no_restarts_means_dead_on_first_exit() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=0)
    rec = alive(table, spec)
    table.exited(spec.actor_id, 0, "segfault")
    assert rec.state is ActorState.DEAD
    assert rec.incarnation == 0


def test_restart_budget_is_counted_down() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=3)
    rec = alive(table, spec)
    for incarnation, left in [(0, 2), (1, 1), (2, 0)]:
        table.exited(spec.actor_id, incarnation, "crash")
        assert rec.state is ActorState.RESTARTING
        assert rec.restarts_left == left
        assert table.started(spec.actor_id, incarnation + 1, "tcp://x:1", 1, NODE_A)
    table.exited(spec.actor_id, 3, "crash")
    assert rec.state is ActorState.DEAD


def test_unlimited_restarts() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=-1)
    rec = alive(table, spec)
    for incarnation in range(100):
        assert table.exited(spec.actor_id, incarnation, "crash") is rec
        assert rec.state is ActorState.RESTARTING
        assert rec.restarts_left == -1
        assert table.started(spec.actor_id, incarnation + 1, "tcp://x:1", 1, NODE_A)
    assert rec.incarnation == 100


def test_restart_from_pending_when_the_worker_never_started() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    rec = table.add(spec, "default")
    table.placed(rec, NODE_A)
    table.exited(spec.actor_id, 0, "could not start")
    assert rec.state is ActorState.RESTARTING
    assert rec.incarnation == 1


def test_exit_without_allowing_restart_is_final() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=-1)
    rec = alive(table, spec)
    table.exited(spec.actor_id, 0, "node lost for good", allow_restart=False)
    assert rec.state is ActorState.DEAD


@pytest.mark.parametrize("state_setup", ["unknown", "wrong incarnation", "already alive", "dead"])
def test_started_rejects_events_that_do_not_apply(state_setup: str) -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    rec = table.add(spec, "default")
    incarnation = 0
    actor_id = spec.actor_id
    if state_setup == "unknown":
        actor_id = ActorId("no-such-actor")
    elif state_setup == "wrong incarnation":
        incarnation = 1
    elif state_setup == "already alive":
        assert table.started(actor_id, 0, "tcp://first:1", 1, NODE_A)
    else:
        table.dead(rec, "killed")
    before = (rec.state, rec.address, rec.pid, rec.node_id, table.version)
    assert table.started(actor_id, incarnation, "tcp://late:9", 9, NODE_B) is False
    assert (rec.state, rec.address, rec.pid, rec.node_id, table.version) == before


def test_stale_exit_is_ignored() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=2)
    rec = alive(table, spec)
    table.exited(spec.actor_id, 0, "crash")
    assert table.started(spec.actor_id, 1, "tcp://new:1", 2, NODE_B)
    version = table.version
    # A late report about the replaced worker must not touch its successor.
    assert table.exited(spec.actor_id, 0, "late report of the old worker") is None
    assert rec.state is ActorState.ALIVE
    assert rec.incarnation == 1
    assert rec.restarts_left == 1
    assert rec.address == "tcp://new:1"
    assert table.version == version


def test_stale_started_is_ignored() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    rec = table.add(spec, "default")
    table.exited(spec.actor_id, 0, "crash before start")
    assert rec.incarnation == 1
    assert table.started(spec.actor_id, 0, "tcp://old:1", 1, NODE_A) is False
    assert rec.state is ActorState.RESTARTING


def test_exit_of_dead_or_unknown_actor_is_ignored() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=5)
    rec = alive(table, spec)
    table.dead(rec, "killed")
    version = table.version
    assert table.exited(spec.actor_id, 0, "exit after kill") is None
    assert table.exited(ActorId("nope"), 0, "who?") is None
    assert rec.state is ActorState.DEAD
    assert rec.death_cause == "killed"
    assert table.version == version


def test_kill_requested_prevents_restart() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=-1)
    rec = alive(table, spec)
    table.kill_requested(rec, no_restart=True)
    table.exited(spec.actor_id, 0, "killed")
    assert rec.state is ActorState.DEAD


def test_kill_without_no_restart_allows_restart() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    rec = alive(table, spec)
    table.kill_requested(rec, no_restart=False)
    table.exited(spec.actor_id, 0, "killed")
    assert rec.state is ActorState.RESTARTING


def test_dead_is_idempotent() -> None:
    table = ActorTable()
    spec = make_spec()
    rec = alive(table, spec)
    table.dead(rec, "first cause")
    version = table.version
    table.dead(rec, "second cause")
    assert rec.death_cause == "first cause"
    assert table.version == version


# -- names ----------------------------------------------------------------------------------------


def test_named_lookup_is_per_namespace() -> None:
    table = ActorTable()
    a = table.add(make_spec(name="svc"), "ns1")
    b = table.add(make_spec(name="svc"), "ns2")
    assert table.named("svc", "ns1") is a
    assert table.named("svc", "ns2") is b
    assert table.named("svc", "ns3") is None
    assert table.named("other", "ns1") is None
    assert a.info().name == "svc" and a.info().namespace == "ns1"


@pytest.mark.parametrize("first_state", ["pending", "alive", "restarting"])
def test_taken_name_raises(first_state: str) -> None:
    table = ActorTable()
    first = make_spec(name="svc", max_restarts=1)
    rec = table.add(first, "ns")
    if first_state != "pending":
        assert table.started(first.actor_id, 0, "tcp://a:1", 1, NODE_A)
    if first_state == "restarting":
        table.exited(first.actor_id, 0, "crash")
        assert rec.state is ActorState.RESTARTING
    version, count = table.version, len(table.records)
    second = make_spec(name="svc")
    with pytest.raises(NameTakenError, match="svc") as info:
        table.add(second, "ns")
    assert isinstance(info.value, ValueError)
    assert table.get(second.actor_id) is None
    assert (table.version, len(table.records)) == (version, count)
    assert table.named("svc", "ns") is rec


@pytest.mark.parametrize("how", ["exited", "dead"])
def test_name_is_freed_at_death(how: str) -> None:
    table = ActorTable()
    first = make_spec(name="svc")
    rec = alive(table, first, "ns")
    if how == "exited":
        table.exited(first.actor_id, 0, "crash")
    else:
        table.dead(rec, "killed")
    assert rec.state is ActorState.DEAD
    assert table.named("svc", "ns") is None
    second = make_spec(name="svc")
    new = table.add(second, "ns")
    assert table.named("svc", "ns") is new


def test_death_of_old_owner_does_not_free_the_new_owners_name() -> None:
    table = ActorTable()
    old = table.add(make_spec(name="svc"), "ns")
    table.dead(old, "killed")
    new = table.add(make_spec(name="svc"), "ns")
    table.dead(old, "killed again")  # a no-op on a dead record
    table.exited(old.actor_id, 0, "late exit")
    assert table.named("svc", "ns") is new


def test_unnamed_actors_never_conflict() -> None:
    table = ActorTable()
    for _ in range(3):
        table.add(make_spec(), "ns")
    assert len(table.records) == 3


# -- versions and queries -------------------------------------------------------------------


def test_every_change_strictly_increases_the_version() -> None:
    table = ActorTable()
    spec = make_spec(max_restarts=1)
    seen = [table.version]

    def changed() -> None:
        assert table.version > seen[-1]
        assert table.get(spec.actor_id).version == table.version  # type: ignore[union-attr]
        seen.append(table.version)

    rec = table.add(spec, "ns")
    changed()
    table.placed(rec, NODE_A)
    changed()
    table.started(spec.actor_id, 0, "tcp://a:1", 1, NODE_A)
    changed()
    table.exited(spec.actor_id, 0, "crash")
    changed()
    table.started(spec.actor_id, 1, "tcp://a:2", 2, NODE_A)
    changed()
    table.dead(rec, "killed")
    changed()


def test_kill_request_alone_is_not_a_visible_change() -> None:
    table = ActorTable()
    rec = table.add(make_spec(), "ns")
    version = table.version
    table.kill_requested(rec, no_restart=True)
    assert table.version == version


def test_changed_since_returns_exactly_the_changed_records() -> None:
    table = ActorTable()
    specs = [make_spec(actor_id=f"a{i}") for i in range(4)]
    recs = [table.add(s, "ns") for s in specs]
    assert {i.actor_id for i in table.changed_since(0)} == {s.actor_id for s in specs}

    mark = table.version
    assert table.changed_since(mark) == []
    table.placed(recs[1], NODE_A)
    table.started(specs[3].actor_id, 0, "tcp://d:1", 4, NODE_B)
    table.started(specs[0].actor_id, 5, "tcp://stale:1", 4, NODE_B)  # ignored: wrong incarnation
    changed = table.changed_since(mark)
    assert sorted(i.actor_id.hex for i in changed) == ["a1", "a3"]
    by_id = {i.actor_id.hex: i for i in changed}
    assert by_id["a1"].node_id == NODE_A
    assert by_id["a3"].state is ActorState.ALIVE
    assert by_id["a3"].address == "tcp://d:1"

    mark2 = table.version
    table.dead(recs[2], "killed")
    assert [i.actor_id.hex for i in table.changed_since(mark2)] == ["a2"]
    assert table.changed_since(table.version) == []


def test_info_mirrors_the_record() -> None:
    table = ActorTable()
    job = JobId("job1")
    spec = make_spec(name="svc", max_restarts=2, job_id=job, lifetime="detached")
    rec = alive(table, spec, "ns")
    info = rec.info()
    assert info.actor_id == spec.actor_id
    assert info.class_name == "Counter"
    assert info.state is ActorState.ALIVE
    assert info.address == "tcp://10.0.0.1:7000"
    assert info.pid == 1234
    assert info.node_id == NODE_A
    assert info.name == "svc" and info.namespace == "ns"
    assert info.detached is True
    assert info.methods == ("incr", "get")
    assert info.async_methods == ("aincr",)
    assert info.restarts_left == 2
    assert info.version == rec.version
    assert table.add(make_spec(), "ns").info().detached is False


def test_queries_by_job_and_node_skip_dead_actors() -> None:
    table = ActorTable()
    job1, job2 = JobId("j1"), JobId("j2")
    a = alive(table, make_spec(job_id=job1), node=NODE_A)
    b = alive(table, make_spec(job_id=job1), node=NODE_B)
    c = alive(table, make_spec(job_id=job2), node=NODE_A)
    assert {r.actor_id for r in table.of_job(job1)} == {a.actor_id, b.actor_id}
    assert {r.actor_id for r in table.on_node(NODE_A)} == {a.actor_id, c.actor_id}
    table.dead(a, "killed")
    assert [r.actor_id for r in table.of_job(job1)] == [b.actor_id]
    assert [r.actor_id for r in table.on_node(NODE_A)] == [c.actor_id]
    assert table.on_node(NodeId("empty")) == []
