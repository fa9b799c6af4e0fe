"""Issue 14 item 12: Ray Serve 2.x option forms (a positional deployment name,
`.options(func_or_class=...)`, `node.__call__.bind(...)`, `num_replicas="auto"`) and unknown
keyword options rejected with the known ones listed, at every call that takes them. No processes."""

from __future__ import annotations

import pytest

import serve
from serve._api.graph import CallNode
from serve._schema import parse_config
from serve.drivers import DAGDriver
from serve.exceptions import OptionTypeError


class Model:
    def __call__(self, x: int) -> int:
        return x

    def other(self, x: int) -> int:
        return -x


class Replacement:
    def __call__(self, x: int) -> int:
        return 2 * x


def test_positional_name_as_in_ray() -> None:
    d = serve.deployment("renamed", num_replicas=2)(Model)
    assert d.name == "renamed" and d.num_replicas == 2
    assert serve.deployment("bare")(Model).name == "bare"
    with pytest.raises(TypeError, match="name twice"):
        serve.deployment("a", name="b")


def test_deployment_called_with_the_class_and_options() -> None:
    d = serve.deployment(Model, num_replicas=3, name="direct")
    assert (d.name, d.num_replicas, d.func_or_class) == ("direct", 3, Model)


def test_options_func_or_class_replaces_the_code_and_keeps_the_options() -> None:
    d = serve.deployment(num_replicas=2, max_ongoing_requests=7)(Model)
    e = d.options(func_or_class=Replacement)
    assert e.func_or_class is Replacement
    assert (e.name, e.num_replicas, e.max_ongoing_requests) == ("Model", 2, 7)  # the name stays, as in Ray
    assert d.func_or_class is Model  # a copy


def test_call_node_via_dunder_call() -> None:
    app = serve.deployment(Model).bind()
    node = app.__call__.bind(1)
    assert isinstance(node, CallNode) and node._method == "__call__"
    assert not callable(app)  # an Application is still not callable
    with pytest.raises(AttributeError):
        app._private  # noqa: B018


def test_num_replicas_auto_is_autoscaling_with_rays_defaults() -> None:
    d = serve.deployment(num_replicas="auto")(Model)
    cfg = d._config
    a = cfg.autoscaling_config
    assert a is not None
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 100, 2.0)
    assert cfg.max_ongoing_requests == 5
    # Ray's decorator turns "auto" into autoscaling and keeps its DeploymentConfig's default
    # num_replicas of 1, which `Deployment.num_replicas` reads: the same here (not "auto").
    assert d.num_replicas == 1 and serve.deployment(Model).options(num_replicas="auto").num_replicas == 1


def test_num_replicas_auto_keeps_what_autoscaling_config_and_max_ongoing_requests_give() -> None:
    d = serve.deployment(num_replicas="auto", max_ongoing_requests=20,
                         autoscaling_config={"max_replicas": 7, "target_num_ongoing_requests_per_replica": 3})(Model)
    a = d._config.autoscaling_config
    assert (a.min_replicas, a.max_replicas, a.target_ongoing_requests) == (1, 7, 3.0)
    assert d._config.max_ongoing_requests == 20
    assert serve.deployment(num_replicas="auto", max_concurrent_queries=9)(Model)._config.max_ongoing_requests == 9
    # from a fixed count to "auto" and back, through .options
    e = serve.deployment(num_replicas=2)(Model).options(num_replicas="auto")
    assert e._config.autoscaling_config is not None
    f = e.options(num_replicas=3)
    assert f._config.autoscaling_config is None and f.num_replicas == 3


def test_num_replicas_auto_in_a_config_file() -> None:
    config = parse_config({"import_path": "m:app", "deployments": [{"name": "Model", "num_replicas": "auto"}]})
    options = config.applications[0].deployments[0].options
    assert options["autoscaling_config"].max_replicas == 100
    assert options["max_ongoing_requests"] == 5
    assert "num_replicas" not in options


def test_num_replicas_other_strings_rejected() -> None:
    with pytest.raises(OptionTypeError, match="num_replicas must be an integer >= 0, got 'Auto'; or 'auto' for autoscaling"):
        serve.deployment(num_replicas="Auto")(Model)


@pytest.mark.parametrize("call, where", [
    (lambda: serve.deployment(num_replica=2), "unknown deployment option 'num_replica'"),
    (lambda: serve.deployment(Model, replicas=2), "unknown deployment option 'replicas'"),
    (lambda: serve.deployment(Model).options(nmae="x"), "unknown deployment option 'nmae'"),
    (lambda: serve.DeploymentHandle("d").options(strem=True), "handle.options() got an unknown option 'strem'"),
    (lambda: serve.start(detatched=True), "serve.start() got an unknown option 'detatched'"),
    (lambda: DAGDriver.bind(None, http_adaptor=None),
     "DAGDriver.bind() got an unknown option 'http_adaptor'"),
])
def test_unknown_keyword_options_rejected_with_the_known_ones(call, where: str) -> None:
    with pytest.raises(TypeError) as info:
        call()
    text = str(info.value)
    assert where in text and "did you mean" in text and "valid ones are" in text


def test_handle_options_known_to_ray_are_accepted() -> None:
    h = serve.DeploymentHandle("d", "app")
    h2 = h.options(method_name="other", multiplexed_model_id="m1", use_new_handle_api=True,
                   _prefer_local_routing=False)
    assert (h2.deployment_name, h2.app_name, h2.method_name) == ("d", "app", "other")


def test_serve_start_checks_options_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="no gRPC proxy"):
        serve.start(grpc_options={"port": 9000})
    with pytest.raises(ValueError, match="proxy_location must be one of"):
        serve.start(proxy_location="Everywhere")
    with pytest.raises(ValueError, match="disagrees with http_options location"):
        serve.start(proxy_location="EveryNode", http_options={"location": "HeadOnly"})


def test_proxy_location_maps_onto_http_options() -> None:
    from serve._api.startup import _with_proxy_location

    http = serve.HTTPOptions(port=8123)
    assert _with_proxy_location(http, "Disabled").location == "NoServer"
    moved = _with_proxy_location(http, "EveryNode")
    assert (moved.location, moved.port) == ("EveryNode", 8123)
