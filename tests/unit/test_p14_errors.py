"""Issue 14 item 15: errors of Ray's types where Ray's apps catch them, each saying what to
change; all raised in the driver before anything is deployed (no cluster needed)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI

import serve
from serve.dag import InputNode
from serve.drivers import DAGDriver


@serve.deployment
class Model:
    def __call__(self, x):
        return x

    def predict(self, x):
        return x


@serve.deployment
class NoCall:
    def predict(self, x):
        return x


@pytest.mark.parametrize("options", [
    {"num_replicas": "2"}, {"num_replicas": 1.5}, {"max_ongoing_requests": "x"}, {"route_prefix": 5},
    {"name": 5}, {"version": 5}, {"ray_actor_options": 5}, {"autoscaling_config": 5},
    {"health_check_period_s": "a"},
])
def test_wrong_typed_options_raise_type_error(options: dict) -> None:
    with pytest.raises(TypeError, match=next(iter(options))):
        serve.deployment(**options)
    with pytest.raises(TypeError, match=next(iter(options))):
        Model.options(**options)


def test_wrong_typed_run_arguments_raise_type_error() -> None:
    with pytest.raises(TypeError, match=r"serve.run\(name=...\) takes an application name"):
        serve.run(Model.bind(), name=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes a bound deployment"):
        serve.run(5)
    with pytest.raises(TypeError, match="route_prefix"):
        serve.run(Model.bind(), route_prefix=5)


def test_a_graph_without_a_driver_is_a_value_error() -> None:
    with InputNode() as inp:
        graph = Model.bind().predict.bind(inp)
    with pytest.raises(ValueError, match=r"needs an ingress: serve.run\(DAGDriver.bind\(graph\)\)") as e:
        serve.run(graph)
    assert isinstance(e.value, serve.exceptions.GraphWithoutIngressError)
    assert isinstance(e.value, TypeError)  # what it raised before
    assert DAGDriver.bind(graph) is not None  # the way out works


def test_bind_then_remote_says_to_run_it() -> None:
    with pytest.raises(TypeError, match=r"Model.bind\(...\) is an application .*not a handle: "
                                        r"handle = serve.run\(Model.bind\(...\)\)"):
        Model.bind().remote(1)
    with pytest.raises(TypeError, match="graph node, not a handle"):
        Model.bind().predict.remote(1)


def test_bind_bind_of_a_class_without_call_is_refused() -> None:
    with pytest.raises(TypeError, match=r"NoCall has no __call__ .*NoCall.bind\(...\).method.bind\(inp\)"):
        NoCall.bind().bind()
    with InputNode() as inp:
        assert Model.bind().bind(inp) is not None  # __call__ in a graph stays allowed


def test_ingress_on_a_class_with_call_is_refused() -> None:
    app = FastAPI()

    with pytest.raises(ValueError, match="defines __call__"):
        @serve.ingress(app)
        class Both:
            @app.get("/")
            def root(self):
                return "hi"

            def __call__(self, request):
                return "never"

    class Base:
        def __call__(self, request):
            return "inherited"

    with pytest.raises(ValueError, match="defines __call__"):
        serve.ingress(FastAPI())(type("Child", (Base,), {}))
