"""Issue 14 item 12, through real processes: a positionally named deployment with
`num_replicas="auto"` runs autoscaled, `.options(func_or_class=...)` runs the other class,
and a graph built with `node.__call__.bind(...)` answers."""

from __future__ import annotations

import pytest

import serve
from serve._api.startup import running_client
from serve.dag import InputNode
from serve.drivers import DAGDriver

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def no_http(cluster):
    serve.start(http_options={"location": "NoServer"})
    yield
    serve.shutdown()


@serve.deployment("Doubler", num_replicas="auto")
class Twice:
    def __call__(self, x: int) -> int:
        return 2 * x


class Thrice:
    def __call__(self, x: int) -> int:
        return 3 * x


@serve.deployment
class Adder:
    def __init__(self, n: int) -> None:
        self.n = n

    def __call__(self, x: int) -> int:
        return x + self.n


def test_positional_name_and_auto_replicas(no_http) -> None:
    handle = serve.run(Twice.bind(), name="auto")
    assert handle.remote(21).result(timeout_s=30) == 42
    deployed = serve.DeploymentHandle("Doubler", "auto")
    assert deployed.remote(4).result(timeout_s=30) == 8
    targets = running_client().targets()
    cfg = next(t.config for dep, t in targets.items() if dep.name == "Doubler")
    assert cfg.autoscaling_config is not None
    assert (cfg.autoscaling_config.min_replicas, cfg.autoscaling_config.max_replicas) == (1, 100)
    assert cfg.max_ongoing_requests == 5


def test_options_func_or_class(no_http) -> None:
    handle = serve.run(Twice.options(func_or_class=Thrice, num_replicas=1).bind(), name="swapped")
    assert handle.remote(5).result(timeout_s=30) == 15


def test_graph_with_dunder_call_bind(no_http) -> None:
    with InputNode() as inp:
        out = Adder.bind(10).__call__.bind(inp)
        graph = DAGDriver.bind(out)
    handle = serve.run(graph, name="graph")
    assert handle.predict.remote(5).result(timeout_s=30) == 15
