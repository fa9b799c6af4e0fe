"""Roll-out progress with reasons, without processes: what the controller says about replicas
not ready yet (from the head's view of their actors), how often a waiting driver prints it,
the deadline's error; the controller's metrics rows."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import actors
from serve._control.deployment_state import DeploymentState, Placement
from serve._control.status import deployment_status, gist, progress
from serve._data.client import Progress, describe, not_ready
from serve.exceptions import DeployTimeoutError
from serve.messages import DeploymentId

from .test_deployment_state import FakeIO, make_target


def _starting(io: FakeIO, *, version: str = "v1", **config) -> DeploymentState:
    s = DeploymentState(make_target(version, 1, name="Model", **config), io)
    s.step(0.0)
    return s


def test_a_slow_replica_says_why_it_is_not_ready() -> None:
    io = FakeIO()
    s = _starting(io, actor_options={"num_cpus": 1, "resources": {"widget": 1}})
    rid = str(next(iter(s.replicas)))
    assert progress(s, 0.5) == f"{rid} starting for 0 s"
    s.step(1.0)  # slow: the head is asked where the actor is
    assert len(io.placements) == 1
    io.placements[0].succeed(Placement(placed=False, alive=False))
    s.step(1.5)
    assert progress(s, 3.0) == f"{rid} waiting for resources {{CPU: 1, widget: 1}} on any node for 3 s"
    s.step(2.5)
    io.placements[1].succeed(Placement(placed=True, alive=False, node="127.0.0.2"))
    s.step(3.0)
    assert progress(s, 15.0) == f"{rid} constructor running for 12 s on node 127.0.0.2"
    for r in s.replicas.values():
        r.handle.actor_id = SimpleNamespace(hex="a1")  # as real handles have
    entry = deployment_status(s, 15.0)
    assert entry["progress"] == progress(s, 15.0)
    assert entry["replica_details"][0]["waiting"] == "constructor running for 12 s on node 127.0.0.2"
    assert describe("Model", entry) == f"Model 0/1 running (UPDATING): {progress(s, 15.0)}"


def test_a_failed_start_shows_the_error_it_retries_after() -> None:
    io = FakeIO()
    s = _starting(io)
    io.pending("ready")[0].fail(actors.ActorDiedError("the constructor of ReplicaActor raised:\nTraceback (most "
                                                      "recent call last):\n  File \"m.py\", line 3\nOSError: no GPU"))
    s.step(0.1)
    text = progress(s, 0.2)
    assert "retrying after error (1 failed start): replica default#Model#" in text and "OSError: no GPU" in text
    assert gist("a\nTraceback (most recent call last):\n  x\nKeyError: 'k'") == "a ... KeyError: 'k'"


def test_progress_prints_on_change_and_at_least_every_few_seconds() -> None:
    now = [0.0]
    printed: list[str] = []
    p = Progress(printed.append, clock=lambda: now[0])
    p.line("Model 0/1 running (UPDATING): Model#a starting for 0 s")
    now[0] = 1.0
    p.line("Model 0/1 running (UPDATING): Model#a starting for 1 s")  # only the seconds changed
    now[0] = 2.0
    p.line("Model 0/1 running (UPDATING): Model#a constructor running for 0 s")  # a new reason
    now[0] = 6.5
    p.line("Model 0/1 running (UPDATING): Model#a constructor running for 4 s")  # quiet for 4.5 s
    assert [line.split(": ", 1)[1] for line in printed] == [
        "Model#a starting for 0 s", "Model#a constructor running for 0 s", "Model#a constructor running for 4 s"]


def test_the_deadline_error_names_each_late_deployment_and_why() -> None:
    a, b, c = (DeploymentId("app", n) for n in "ABC")
    deps = {a: {"replicas": {"RUNNING": 1}, "target_replicas": 1, "status": "HEALTHY", "progress": ""},
            b: {"replicas": {}, "target_replicas": 2, "status": "UPDATING",
                "progress": "B#x waiting for resources {widget: 1} on any node for 30 s"}}
    error = not_ready(deps, [a, b, c], 30)
    assert isinstance(error, DeployTimeoutError) and isinstance(error, TimeoutError)
    text = str(error)
    assert "not ready after 30 s" in text and "A 1/1" not in text
    assert "B 0/2 running (UPDATING): B#x waiting for resources {widget: 1} on any node for 30 s" in text
    assert "C not created yet" in text


def test_the_controllers_metrics_rows_follow_its_state() -> None:
    from . import test_controller as tc

    async def main() -> None:
        io = tc.FakeIO()
        c = await tc.controller_on(io)
        await c.deploy([tc.target("d", 2)])
        await tc.healthy(c, io)
        healthy = c.metric_rows("serve_deployment_replica_healthy")
        assert sorted(v for _, v in healthy) == [1.0, 1.0] and {k[0] for k, _ in healthy} == {"d"}
        assert c.metric_rows("serve_deployment_target_replicas") == [(("d", "app"), 2.0)]
        assert c.metric_rows("serve_deployment_running_replicas") == [(("d", "app"), 2.0)]
        dead = next(iter(c.deployments[DeploymentId("app", "d")].replicas.values()))
        del io.replicas.auto["check_health"]  # answered here: the dead replica's fails
        for _ in range(30):  # its health check says it died: 0 for it, then a new one at 1
            for p in io.replicas.pending("check_health"):
                if p.handle is dead.handle:
                    p._done, p._error = True, actors.ActorDiedError("gone")
                else:
                    p.succeed(True)
            await tc.step(c, 1.0)
            tc.answer_ready(io)
            rows = dict(c.metric_rows("serve_deployment_replica_healthy"))
            if rows.get(("d", str(dead.replica_id), "app")) == 0.0 and sum(rows.values()) == 2.0:
                break
        else:
            raise AssertionError(f"the dead replica never showed 0: {c.metric_rows('serve_deployment_replica_healthy')}")

    asyncio.run(main())


def test_autoscaling_decisions_are_counted_by_direction() -> None:
    from .test_deployment_state import AUTOSCALING, ready_all

    io = FakeIO()
    s = DeploymentState(make_target("v1", 1, autoscaling_config=AUTOSCALING, health_check_period_s=1e6), io)
    s.step(0.0)
    s.record_load(0.5, "router", 6.0)  # 3 replicas
    s.step(0.5)
    assert s.scaled == {"up": 1, "down": 0}
    t = 0.5
    while t < 6.0:  # no more load: back to 1 after the downscale delay
        t = round(t + 0.1, 3)
        s.step(t)
        ready_all(io)
        for p in io.pending("prepare_for_shutdown"):
            p.succeed(None)
    assert s.desired == 1 and s.scaled == {"up": 1, "down": 1}


def test_a_logging_config_change_reaches_running_replicas_without_a_restart() -> None:
    import dataclasses

    from serve import LoggingConfig

    from .test_deployment_state import ready_all

    io = FakeIO()
    s = DeploymentState(make_target("v1", 2), io)
    s.step(0.0)
    ready_all(io)
    s.step(0.1)
    json_config = LoggingConfig(encoding="JSON")
    target = dataclasses.replace(s.target, config=s.target.config.model_copy(update={"logging_config": json_config}))
    assert s.update(target)
    s.step(0.2)
    calls = io.pending("set_logging_config")
    assert len(calls) == 2 and all(c.args == (json_config,) for c in calls)
    for c in calls:
        c.succeed(None)
    s.step(0.3)
    assert len(io.handles) == 2 and not io.kills and s.status == "HEALTHY"  # no replica was replaced


def test_logging_config_precedence_in_a_config_file() -> None:
    from serve._build import build_config

    def logging_of(data: dict) -> dict:
        _, (app,) = build_config(data)
        return {t.name: t.config.logging_config for t in app.targets}

    serve_level = {"log_level": "WARNING"}  # Serve's, and the default of every deployment
    both = logging_of({
        "logging_config": serve_level,
        "applications": [{"import_path": "examples.serve_app:app", "logging_config": {"encoding": "JSON"},
                          "deployments": [{"name": "Tokenizer", "logging_config": {"enable_access_log": False}}]}]})
    assert both["Tokenizer"].enable_access_log is False and both["Tokenizer"].encoding == "TEXT"  # its own
    assert both["Sentiment"].encoding == "JSON" and both["Sentiment"].log_level == "INFO"  # the application's
    only_serve = logging_of({"logging_config": serve_level, "import_path": "examples.serve_app:app"})
    assert {c.log_level for c in only_serve.values()} == {"WARNING"}  # Serve's
    assert set(logging_of({"import_path": "examples.serve_app:app"}).values()) == {None}  # Serve's defaults then
