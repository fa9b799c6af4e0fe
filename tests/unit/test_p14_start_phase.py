"""Issue 14 items 9-11, the controller's side: a replica's own start (constructor, lifespan
startup, reconfigure, first health check) as the status's reason, from the phase the replica
reports; no processes."""

from __future__ import annotations

from serve._control.deployment_state import DeploymentState, Placement
from serve._control.status import progress

from .test_deployment_state import FakeIO, make_target


def test_an_alive_replica_says_which_step_of_its_start_runs() -> None:
    io = FakeIO()
    s = DeploymentState(make_target("v1", 1, name="Model"), io)
    s.step(0.0)
    rid = str(next(iter(s.replicas)))
    expected = {
        "constructor": f"{rid} constructor running for 8 s on node 127.0.0.2",
        "lifespan": f"{rid} the ingress app's startup running on node 127.0.0.2 (10 s since start)",
        "reconfigure": f"{rid} reconfigure(user_config) running on node 127.0.0.2 (10 s since start)",
        "health_check": f"{rid} the first health check running on node 127.0.0.2 (10 s since start)",
        "": f"{rid} constructed on node 127.0.0.2, answering its readiness check (10 s since start)",
    }
    now = 0.0
    for phase, line in expected.items():
        now += 2.0
        s.step(now)
        io.placements[-1].succeed(Placement(placed=True, alive=True, node="127.0.0.2", phase=phase))
        s.step(now + 0.01)
        assert progress(s, 10.0) == line, phase
