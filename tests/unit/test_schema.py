"""Serve config files: the schema (field paths in every error, unknown fields refused) and the
build step (imports, deployment overrides, computed versions). No cluster: nothing here
deploys anything."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import yaml

import serve
from serve._build import build
from serve._config import DEFAULT
from serve._schema import load_config, parse_config, single_app
from serve.exceptions import ConfigError

from ..conftest import ROOT

APP = "examples.serve_app:app"


def _errors(data) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    return str(e.value).splitlines()[1:] or [str(e.value)]


def test_the_example_config_file_is_valid() -> None:
    config = load_config(ROOT / "examples" / "serve_config.yaml")
    (app,) = config.applications
    assert config.http_options == {"host": "127.0.0.1", "port": 8000}
    assert (app.name, app.import_path, app.route_prefix) == ("sentiment", APP, "/sentiment")
    overrides = {d.name: d.options for d in app.deployments}
    assert overrides == {"Sentiment": {"num_replicas": 2, "user_config": {"threshold": 0.0}},
                         "Tokenizer": {"max_ongoing_requests": 50}}


def test_multi_app_config_with_old_option_names_and_proxy_location() -> None:
    config = parse_config({
        "proxy_location": "Disabled",
        "applications": [
            {"name": "a", "import_path": APP, "route_prefix": "/a",
             "deployments": [{"name": "Sentiment", "max_concurrent_queries": 7, "ray_actor_options": {"num_cpus": 0.5}}]},
            {"name": "b", "import_path": "examples.serve_app.app", "route_prefix": None},
        ],
    })
    assert config.http_options == {"location": "NoServer"}
    a, b = config.applications
    assert a.deployments[0].options == {"max_ongoing_requests": 7, "actor_options": {"num_cpus": 0.5}}
    assert b.route_prefix is None and b.deployments == ()


def test_single_application_form() -> None:
    config = parse_config({"import_path": APP, "route_prefix": "/x", "http_options": {"port": 8123}})
    (app,) = config.applications
    assert (app.name, app.route_prefix, app.path) == ("default", "/x", "applications[0]")
    assert single_app(APP).applications[0].route_prefix is DEFAULT
    assert "import_path" in _errors({"import_path": APP, "applications": []})[0]


@pytest.mark.parametrize(("data", "expected"), [
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A"}, {"name": "B", "num_replicas": -1}]}]},
     "applications[0].deployments[1].num_replicas: must be an integer >= 0, got -1"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "num_replicas": "two"}]}]},
     "applications[0].deployments[0].num_replicas: must be an integer >= 0, got 'two'"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "colour": "red"}]}]},
     "applications[0].deployments[0].colour: unknown field"),
    ({"applications": [{"import_path": APP, "colour": "red"}]}, "applications[0].colour: unknown field"),
    ({"colour": "red", "applications": [{"import_path": APP}]}, "colour: unknown field"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "route_prefix": "/a"}]}]},
     "applications[0].deployments[0].route_prefix: set route_prefix on the application"),
    ({"applications": [{"import_path": APP, "deployments": [{"num_replicas": 1}]}]},
     "applications[0].deployments[0].name: required"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A"}, {"name": "A"}]}]},
     "applications[0].deployments[1].name: 'A' is also used by applications[0].deployments[0]"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}]}]},
     "applications[0].deployments[0].autoscaling_config.min_replicas: (3) must be <= max_replicas (2)"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}]}]},
     "applications[0].deployments[0]: give either num_replicas or autoscaling_config"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "health_check_period_s": 0}]}]},
     "applications[0].deployments[0].health_check_period_s: must be a number of seconds > 0, got 0"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "actor_options": {"gpu": 1}}]}]},
     "applications[0].deployments[0].actor_options: unknown actor_options ['gpu']"),
    ({"applications": [{"import_path": APP, "route_prefix": "api"}]},
     "applications[0].route_prefix: must be None or a string starting with '/'"),
    ({"applications": [{"import_path": "nope"}]}, "applications[0].import_path: must look like 'package.module:app'"),
    ({"applications": [{"name": "a"}]}, "applications[0].import_path: required"),
    ({"applications": [{"import_path": APP}, {"import_path": APP}]},
     "applications[1].name: required when the config has several applications"),
    ({"applications": [{"name": "a", "import_path": APP, "route_prefix": "/x"},
                       {"name": "a", "import_path": APP, "route_prefix": "/x"}]},
     "applications[1].name: 'a' is also used by applications[0]"),
    ({"applications": [{"name": "a", "import_path": APP, "route_prefix": "/x"},
                       {"name": "b", "import_path": APP, "route_prefix": "/x"}]},
     "applications[1].route_prefix: '/x' is also used by applications[0]"),
    ({"applications": [{"import_path": APP, "args": [1]}]}, "applications[0].args: must be a mapping"),
    ({"applications": [{"import_path": APP, "runtime_env": {"pip": ["x"]}}]},
     "applications[0].runtime_env: not supported"),
    ({"applications": []}, "applications: must be a non-empty list"),
    ({"http_options": {"port": 99999}, "applications": [{"import_path": APP}]},
     "http_options.port: must be an integer in 1..65535, got 99999"),
    ({"http_options": {"hots": "x"}, "applications": [{"import_path": APP}]}, "http_options.hots: unknown field"),
    ({"http_options": {"host": 5}, "applications": [{"import_path": APP}]}, "http_options.host: must be an IP"),
    ({"http_options": {"location": "Everywhere"}, "applications": [{"import_path": APP}]},
     "http_options.location: must be 'HeadOnly', 'EveryNode' or 'NoServer'"),
    ({"proxy_location": "Nowhere", "applications": [{"import_path": APP}]}, "proxy_location: must be one of"),
    ({"http_options": {"root_path": "serve/"}, "applications": [{"import_path": APP}]},
     "http_options.root_path: must be '' or a path starting with '/', such as '/serve'; got 'serve/': use '/serve'"),
    ({"http_options": {"middlewares": ["cors"]}, "applications": [{"import_path": APP}]},
     "http_options.middlewares: not supported in a config file"),
])
def test_invalid_configs_name_the_field(data, expected) -> None:
    errors = _errors(data)
    assert any(line.strip().startswith(expected) for line in errors), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = _errors({"http_options": {"port": 0}, "applications": [
        {"name": "a", "import_path": APP, "deployments": [{"name": "A", "num_replicas": -1, "max_ongoing_requests": 0}]},
        {"name": "b", "import_path": 5}]})
    assert [e.split(":")[0].strip() for e in errors] == [
        "http_options.port", "applications[0].deployments[0].num_replicas",
        "applications[0].deployments[0].max_ongoing_requests", "applications[1].import_path"]


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["import_path", APP])
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications: [\n")
    with pytest.raises(ConfigError, match=r"(?s)bad.yaml: not valid YAML.*line 2"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


# -- build: imports, overrides, versions -----------------------------------------------------------------


def _built(overrides=(), **app):
    config = parse_config({"applications": [{"name": "s", "import_path": APP, "route_prefix": "/s",
                                             "deployments": list(overrides), **app}]})
    (built,) = build(config)
    return {t.name: t for t in built.targets}, built


def test_build_applies_overrides_and_finds_the_ingress() -> None:
    targets, built = _built([{"name": "Sentiment", "num_replicas": 3, "user_config": {"threshold": 2}},
                             {"name": "Tokenizer", "autoscaling_config": {"min_replicas": 1, "max_replicas": 4}}])
    assert sorted(targets) == ["Pipeline", "Sentiment", "Tokenizer"]
    assert (built.ingress, built.route_prefix) == ("Pipeline", "/s")
    assert targets["Pipeline"].route_prefix == "/s" and targets["Sentiment"].route_prefix is None
    s = targets["Sentiment"].config
    assert (s.num_replicas, s.user_config) == (3, {"threshold": 2})
    assert targets["Tokenizer"].config.autoscaling_config == {"min_replicas": 1, "max_replicas": 4}
    assert all(t.app == "s" and t.version_given for t in targets.values())


def test_versions_are_stable_and_change_only_with_what_replicas_are_built_from() -> None:
    base, _ = _built()
    again, _ = _built()
    assert {n: t.version for n, t in base.items()} == {n: t.version for n, t in again.items()}
    light, _ = _built([{"name": "Sentiment", "num_replicas": 5, "user_config": {"threshold": 9}}])
    assert light["Sentiment"].version == base["Sentiment"].version, "num_replicas/user_config are applied in place"
    heavy, _ = _built([{"name": "Sentiment", "max_ongoing_requests": 3}, {"name": "Tokenizer",
                                                                          "actor_options": {"num_cpus": 0.5}}])
    assert heavy["Sentiment"].version != base["Sentiment"].version
    assert heavy["Tokenizer"].version != base["Tokenizer"].version
    assert heavy["Pipeline"].version == base["Pipeline"].version


def test_build_names_unknown_deployments_and_import_errors() -> None:
    with pytest.raises(ConfigError) as e:
        _built([{"name": "Sentiment"}, {"name": "Sentimint", "num_replicas": 1}])
    assert str(e.value).startswith("applications[0].deployments[1].name: application 's' (examples.serve_app:app) "
                                   "has no deployment named 'Sentimint'; its deployments are "
                                   "['Pipeline', 'Sentiment', 'Tokenizer']")
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: cannot import 'examples.nothing:app'"):
        build(parse_config({"import_path": "examples.nothing:app"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: cannot import 'examples.serve_app:nope'"):
        build(parse_config({"import_path": "examples.serve_app:nope"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: .*it must be a bound deployment"):
        build(parse_config({"import_path": "examples.serve_app:POSITIVE"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].args: .* is an application already bound"):
        build(parse_config({"import_path": APP, "args": {"x": 1}}))


def test_two_applications_may_not_share_a_deployment_or_a_route() -> None:
    with pytest.raises(ConfigError, match=r"applications\[1\]: deployment '\w+' is also part of applications\[0\]"):
        build(parse_config({"applications": [{"name": "a", "import_path": APP, "route_prefix": "/a"},
                                             {"name": "b", "import_path": APP, "route_prefix": "/b"}]}))


def test_the_example_config_builds() -> None:
    config = load_config(ROOT / "examples" / "serve_config.yaml")
    (built,) = build(config)
    assert yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text())["applications"][0]["name"] == "sentiment"
    assert {t.name: t.config.num_replicas for t in built.targets} == {"Tokenizer": 1, "Sentiment": 2, "Pipeline": 1}


@serve.deployment
class Echo:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix


def echo_builder(args: dict) -> serve.Application:
    """An application builder, as `import_path` with `args` names it."""
    return Echo.bind(args["prefix"])


def test_a_builder_gets_the_args() -> None:
    (built,) = build(parse_config({"import_path": "tests.unit.test_schema:echo_builder", "args": {"prefix": "hi"}}))
    (target,) = built.targets
    _, init_args, _ = pickle.loads(target.code)
    assert (target.name, init_args, built.route_prefix) == ("Echo", ("hi",), "/Echo")
    with pytest.raises(ConfigError, match=r"applications\[0\].args: the application builder .* raised KeyError"):
        build(parse_config({"import_path": "tests.unit.test_schema:echo_builder", "args": {"prefx": "hi"}}))
    other, = build(parse_config({"import_path": "tests.unit.test_schema:echo_builder", "args": {"prefix": "ho"}}))
    assert other.targets[0].version != target.version, "other constructor arguments: a roll"
    (from_cli,) = build(single_app("tests.unit.test_schema:echo_builder", "e", "/e", args={"prefix": "hi"}))
    assert (from_cli.targets[0].version, from_cli.route_prefix) == (target.version, "/e")
