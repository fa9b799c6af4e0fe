"""Serve config files: the schema (field paths in every error, unknown fields refused, every
problem at once), the build step (imports, deployment overrides, computed versions), the JSON
Schema, and the option models behind them. No cluster: nothing here deploys anything."""

from __future__ import annotations

import io
import json
import pickle
from contextlib import redirect_stdout
from pathlib import Path

import pydantic
import pytest
import yaml

import serve
from serve import _schema
from serve._autoscaling_config import AutoscalingConfig
from serve._build import build, build_config, load_and_build
from serve._cli import main as serve_cli
from serve._config import DEFAULT, DeploymentConfig, HTTPOptions, config_from, validate_options
from serve._schema import ServeConfig, config_json_schema, load_config, parse_config, read_config, single_app
from serve.exceptions import ConfigError, OptionTypeError

from ..conftest import ROOT

APP = "examples.serve_app:app"


def _errors(data, check=parse_config) -> list[str]:
    with pytest.raises(ConfigError) as e:
        check(data)
    header, *lines = str(e.value).splitlines()
    assert header.startswith("invalid config "), header
    return [line.strip() for line in lines]


def test_the_example_config_file_is_valid() -> None:
    config = load_config(ROOT / "examples" / "serve_config.yaml")
    (app,) = config.applications
    assert isinstance(config.http_options, HTTPOptions)
    assert config.http_options.given() == {"host": "127.0.0.1", "port": 8000}
    assert (config.http_options.port, config.http_options.location) == (8000, "HeadOnly")
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
    assert config.http_options.given() == {"location": "NoServer"}
    a, b = config.applications
    assert a.deployments[0].options == {"max_ongoing_requests": 7, "actor_options": {"num_cpus": 0.5}}
    assert b.route_prefix is None and b.deployments == ()


def test_single_application_form() -> None:
    config = parse_config({"import_path": APP, "route_prefix": "/x", "http_options": {"port": 8123}})
    (app,) = config.applications
    assert (app.name, app.route_prefix, config.http_options.port) == ("default", "/x", 8123)
    assert single_app(APP).applications[0].route_prefix is DEFAULT
    assert "give either `applications:` or a top-level `import_path:`, not both" in _errors(
        {"import_path": APP, "applications": []})
    # errors name the fields as the file has them, at the top level
    assert _errors({"import_path": APP, "deployments": [{"name": "A", "num_replicas": -1}]}) == [
        "deployments[0].num_replicas: must be an integer >= 0, got -1"]


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
     "applications[0].deployments[1].name: 'A' is also used by deployments[0]"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "autoscaling_config": {"min_replicas": 3, "max_replicas": 2}}]}]},
     "applications[0].deployments[0].autoscaling_config.min_replicas: must be <= max_replicas (2), got 3"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "autoscaling_config": {"target_num_ongoing_requests_per_replica": "2"}}]}]},
     "applications[0].deployments[0].autoscaling_config.target_num_ongoing_requests_per_replica: must be a number "
     "> 0, got '2': give the number 2"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "max_concurrent_queries": 5, "max_ongoing_requests": 6}]}]},
     "applications[0].deployments[0].max_concurrent_queries: is the old name of max_ongoing_requests; give only one"),
    ({"applications": [{"import_path": APP, "deployments": [
        {"name": "A", "num_replicas": 2, "autoscaling_config": {"max_replicas": 2}}]}]},
     "applications[0].deployments[0]: give either num_replicas or autoscaling_config"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "health_check_period_s": 0}]}]},
     "applications[0].deployments[0].health_check_period_s: must be a number of seconds > 0, got 0"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "actor_options": {"gpu": 1}}]}]},
     "applications[0].deployments[0].actor_options.gpu: unknown field; valid fields here "
     "are num_cpus, resources, num_gpus"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "num_replicas": True}]}]},
     "applications[0].deployments[0].num_replicas: must be an integer >= 0, got True"),
    ({"applications": [{"import_path": APP, "deployments": [{"name": "A", "health_check_timeout_s": "5"}]}]},
     "applications[0].deployments[0].health_check_timeout_s: must be a number of seconds > 0, got '5': give the "
     "number 5, not the string '5'"),
    ({"applications": [{"import_path": APP, "route_prefix": "api"}]},
     "applications[0].route_prefix: must be None or a string starting with '/'"),
    ({"applications": [{"import_path": "nope"}]},
     "applications[0].import_path: must be an import path such as 'package.module:app'"),
    ({"applications": ["nope"]}, "applications[0]: must be a mapping with at least `import_path`, got 'nope'"),
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
    ({"http_options": {"port": "8000"}, "applications": [{"import_path": APP}]},
     "http_options.port: must be an integer in 1..65535, got '8000': give the number 8000, not the string '8000'"),
    ({"http_options": {"port": 99999}, "applications": [{"import_path": APP}]},
     "http_options.port: must be an integer in 1..65535, got 99999"),
    ({"http_options": {"hots": "x"}, "applications": [{"import_path": APP}]}, "http_options.hots: unknown field"),
    ({"http_options": {"host": 5}, "applications": [{"import_path": APP}]}, "http_options.host: must be an IP"),
    ({"http_options": {"location": "Everywhere"}, "applications": [{"import_path": APP}]},
     "http_options.location: must be 'HeadOnly', 'EveryNode' or 'NoServer'"),
    ({"proxy_location": "Nowhere", "applications": [{"import_path": APP}]},
     "proxy_location: must be 'HeadOnly', 'EveryNode', 'NoServer' or 'Disabled', got 'Nowhere'"),
    ({"proxy_location": "Disabled", "http_options": {"location": "EveryNode"}, "applications": [{"import_path": APP}]},
     "proxy_location: 'Disabled' disagrees with http_options.location 'EveryNode'; give only one"),
    ({"http_options": {"root_path": "serve/"}, "applications": [{"import_path": APP}]},
     "http_options.root_path: must be '' or a path starting with '/', such as '/serve', got 'serve/'; use '/serve'"),
    ({"http_options": {"middlewares": ["cors"]}, "applications": [{"import_path": APP}]},
     "http_options.middlewares: not supported in a config file"),
])
def test_invalid_configs_name_the_field(data, expected) -> None:
    errors = _errors(data)
    assert any(line.startswith(expected) for line in errors), errors


def test_every_problem_is_reported_at_once() -> None:
    errors = _errors({"http_options": {"port": 0}, "applications": [
        {"name": "a", "import_path": APP, "deployments": [{"name": "A", "num_replicas": -1, "max_ongoing_requests": 0}]},
        {"name": "b", "import_path": 5}]})
    assert [e.split(":")[0] for e in errors] == [
        "http_options.port", "applications[0].deployments[0].num_replicas",
        "applications[0].deployments[0].max_ongoing_requests", "applications[1].import_path"]


def test_every_problem_is_reported_at_once_field_errors_and_build_errors(tmp_path: Path) -> None:
    """A misspelled deployment name (found only by importing the app) is listed with the field
    errors, also of the same deployment, and apps that cannot be imported still list theirs."""
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump({"http_options": {"port": "8000"}, "applications": [
        {"name": "a", "import_path": APP, "route_prefix": "/a", "deployments": [
            {"name": "Sentimint", "num_replicas": -1}, {"name": "Tokenizer", "colour": "red"}]},
        {"name": "b", "import_path": "examples.nothing:app", "route_prefix": "/b",
         "deployments": [{"name": "X", "max_ongoing_requests": 0}]}]}))
    assert _errors(config, load_and_build) == [
        "http_options.port: must be an integer in 1..65535, got '8000': give the number 8000, not the string '8000'",
        "applications[0].deployments[0].num_replicas: must be an integer >= 0, got -1",
        "applications[0].deployments[1].colour: unknown field; valid fields here are num_replicas, max_ongoing_requests, "
        "max_queued_requests, user_config, autoscaling_config, health_check_period_s, health_check_timeout_s, "
        "graceful_shutdown_wait_loop_s, graceful_shutdown_timeout_s, actor_options, logging_config, name, max_concurrent_queries, "
        "ray_actor_options",
        "applications[0].deployments[0].name: application 'a' (examples.serve_app:app) has no deployment named "
        "'Sentimint' (did you mean 'Sentiment'?); its deployments are ['Pipeline', 'Sentiment', 'Tokenizer']",
        "applications[1].deployments[0].max_ongoing_requests: must be an integer >= 1, got 0",
        "applications[1].import_path: cannot import 'examples.nothing:app': ModuleNotFoundError: No module named "
        "'examples.nothing' (the module must be importable from the current directory or the Python path)",
    ]
    # and with the field errors fixed, the build's own problems alone
    assert _errors({"import_path": APP, "deployments": [{"name": "Sentimint"}]}, build_config) == [
        "deployments[0].name: application 'default' (examples.serve_app:app) has no deployment named 'Sentimint' "
        "(did you mean 'Sentiment'?); its deployments are ['Pipeline', 'Sentiment', 'Tokenizer']"]


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config(["import_path", APP])
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML at line 2, column 1: did not find expected"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")


def test_a_config_file_over_the_size_cap_is_refused_unparsed(tmp_path: Path, monkeypatch) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("applications: [" + "{import_path: a.b}, " * 100 + "]\n")
    assert len(read_config(big)["applications"]) == 100
    monkeypatch.setenv("ZEROSERVE_CONFIG_MAX_BYTES", "1000")
    with pytest.raises(ConfigError, match=r"big.yaml: the config file is larger than 1000 bytes, so it was not read.*"
                                          r"ZEROSERVE_CONFIG_MAX_BYTES"):
        read_config(big)
    monkeypatch.setenv("ZEROSERVE_CONFIG_MAX_BYTES", "lots")
    with pytest.raises(ConfigError, match="ZEROSERVE_CONFIG_MAX_BYTES must be a number of bytes, got 'lots'"):
        read_config(big)
    assert _schema.MAX_CONFIG_BYTES == 10 * 1024 * 1024


def test_yaml_is_parsed_with_libyaml_when_present() -> None:
    expected = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader
    assert _schema._YAML_LOADER is expected


# -- the JSON Schema -------------------------------------------------------------------------------------


def _schema_json() -> dict:
    out = io.StringIO()
    with redirect_stdout(out):
        assert serve_cli(["config-schema"]) == 0
    return json.loads(out.getvalue())


def test_config_schema_command_prints_a_schema_editors_can_use() -> None:
    schema = _schema_json()
    assert schema == json.loads(json.dumps(config_json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    override = schema["$defs"]["DeploymentOverride"]
    assert override["required"] == ["name"] and override["additionalProperties"] is False
    assert override["properties"]["num_replicas"]["description"] == "Replicas to run (without autoscaling)."
    assert "default" not in override["properties"]["num_replicas"], "an override's default is the deployment's own"
    assert override["properties"]["max_concurrent_queries"]["deprecated"] is True
    http = schema["$defs"]["HTTPOptions"]["properties"]
    assert http["port"]["maximum"] == 65535 and "middlewares" not in http  # Python objects: not in a file
    assert schema["$defs"]["AutoscalingConfig"]["properties"]["min_replicas"]["default"] == 1
    undocumented = [f"{name}.{field}" for name, model in schema["$defs"].items()
                    for field, prop in model["properties"].items() if not prop.get("description")]
    assert undocumented == [] and all(model.get("description") for model in schema["$defs"].values())


GOOD = [
    yaml.safe_load((ROOT / "examples" / "serve_config.yaml").read_text()),
    {"import_path": APP, "route_prefix": None, "deployments": [{"name": "Sentiment", "max_concurrent_queries": 3,
                                                                "autoscaling_config": {"max_replicas": 4}}]},
    {"proxy_location": "EveryNode", "applications": [{"name": "a", "import_path": "m.n:app", "args": {"x": [1]}}]},
]
BAD = [
    {"http_options": {"port": "8000"}, "applications": [{"import_path": APP}]},
    {"applications": [{"import_path": APP, "deployments": [{"name": "A", "num_replicas": -1}]}]},
    {"applications": [{"import_path": APP, "colour": "red"}]},
    {"applications": [{"import_path": APP, "deployments": [{"num_replicas": 1}]}]},
    {"applications": []},
    {"import_path": "nope"},
]


@pytest.mark.parametrize("data", GOOD)
def test_the_schema_accepts_good_configs_as_the_models_do(data) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(_schema_json())
    assert list(validator.iter_errors(data)) == []
    assert isinstance(parse_config(data), ServeConfig)


@pytest.mark.parametrize("data", BAD)
def test_the_schema_rejects_wrong_configs_as_the_models_do(data) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(_schema_json())
    assert list(jsonschema.Draft202012Validator(_schema_json()).iter_errors(data)) != []
    with pytest.raises(ConfigError):
        parse_config(data)


# -- the option models, as Python calls see them ---------------------------------------------------------


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"num_replicas": "2"}, TypeError, "num_replicas must be an integer >= 0, got '2': give the number 2"),
    ({"num_replicas": True}, TypeError, "num_replicas must be an integer >= 0, got True"),
    ({"num_replicas": -1}, ValueError, "num_replicas must be an integer >= 0, got -1"),
    ({"max_ongoing_requests": 1.5}, TypeError, "max_ongoing_requests must be an integer >= 1, got 1.5"),
    ({"health_check_period_s": "10"}, TypeError, "health_check_period_s must be a number of seconds > 0"),
    ({"graceful_shutdown_wait_loop_s": -1}, ValueError, "graceful_shutdown_wait_loop_s must be a number of seconds >= 0"),
    ({"autoscaling_config": {"min_replicas": "1"}}, TypeError, "autoscaling_config.min_replicas must be an integer"),
    ({"autoscaling_config": "auto"}, TypeError, "autoscaling_config must be a dict such as"),
    ({"actor_options": {"num_cpus": "1"}}, TypeError, "actor_options.num_cpus must be a number of CPUs >= 0"),
    ({"actor_options": {"resources": {"CPU": 1}}}, ValueError, "actor_options.resources.CPU is not a custom resource"),
    ({"name": ""}, ValueError, "name must be a non-empty string without '#', got ''"),
    ({"init_kwargs": [1]}, TypeError, "init_kwargs must be a dict of constructor keyword arguments, got [1]"),
    ({"replicas": 1}, TypeError, "unknown deployment option 'replicas' (did you mean 'num_replicas'?)"),
])
def test_deployment_options_raise_type_or_value_errors_naming_the_option(options, error, message) -> None:
    with pytest.raises(error) as e:
        validate_options(options)
    assert str(e.value).startswith(message), str(e.value)
    assert isinstance(e.value, ValueError), "a ValueError too, as before"
    assert isinstance(e.value, OptionTypeError) is (error is TypeError)


def test_every_wrong_option_of_a_call_is_listed() -> None:
    with pytest.raises(TypeError) as e:
        validate_options({"num_replicas": -1, "max_ongoing_requests": "5", "colour": 1})
    assert str(e.value).splitlines() == [
        "num_replicas must be an integer >= 0, got -1",
        "max_ongoing_requests must be an integer >= 1, got '5': give the number 5, not the string '5'",
        "unknown deployment option 'colour'; valid ones are " + ", ".join(serve._config.OPTION_NAMES)]


def test_options_become_a_frozen_picklable_deployment_config() -> None:
    options = validate_options({"max_concurrent_queries": 7, "ray_actor_options": {"num_cpus": 1, "num_gpus": 0},
                                "autoscaling_config": {"target_num_ongoing_requests_per_replica": 3}, "init_args": [1],
                                "route_prefix": DEFAULT})
    assert options == {"max_ongoing_requests": 7, "actor_options": {"num_cpus": 1.0}, "init_args": (1,),
                       "autoscaling_config": AutoscalingConfig(target_ongoing_requests=3)}
    config = config_from(options)
    assert config == DeploymentConfig(max_ongoing_requests=7, actor_options={"num_cpus": 1},
                                      autoscaling_config={"target_ongoing_requests": 3.0})
    assert (config.num_replicas, config.health_check_period_s, config.autoscaling_config.target_ongoing_requests) == (
        1, 10.0, 3.0)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.num_replicas = 3  # type: ignore[misc]
    assert validate_options({"num_replicas": None}) == {}  # None: the default


def test_http_options_are_a_frozen_hashable_picklable_value() -> None:
    opts = HTTPOptions(port=8123, location="EveryNode")
    assert pickle.loads(pickle.dumps(opts)) == opts and hash(opts) == hash(HTTPOptions(port=8123, location="EveryNode"))
    assert opts.given() == {"port": 8123, "location": "EveryNode"}
    assert dict(opts)["keep_alive_timeout_s"] == 5 and HTTPOptions.of(opts) is opts
    assert HTTPOptions.of({"port": 8123}).port == 8123 and HTTPOptions.of(None) == HTTPOptions()
    with pytest.raises(TypeError, match=r"http_options must be a dict or serve\.HTTPOptions, got list"):
        HTTPOptions.of([("port", 1)])


def test_the_default_port_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("ZEROSERVE_HTTP_PORT", "8765")
    assert HTTPOptions().port == 8765 and parse_config({"import_path": APP}).http_options.port == 8765
    monkeypatch.setenv("ZEROSERVE_HTTP_PORT", "http")
    with pytest.raises(ValueError, match="ZEROSERVE_HTTP_PORT must be a port number, got 'http'"):
        HTTPOptions()


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
    assert targets["Tokenizer"].config.autoscaling_config == AutoscalingConfig(min_replicas=1, max_replicas=4)
    assert targets["Tokenizer"].config.num_replicas == 1
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
    assert _errors([{"name": "Sentiment"}, {"name": "Sentimint", "num_replicas": 1}], _built) == [
        "applications[0].deployments[1].name: application 's' (examples.serve_app:app) has no deployment named "
        "'Sentimint' (did you mean 'Sentiment'?); its deployments are ['Pipeline', 'Sentiment', 'Tokenizer']"]
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: cannot import 'examples.nothing:app'"):
        build(parse_config({"import_path": "examples.nothing:app"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: cannot import 'examples.serve_app:nope'"):
        build(parse_config({"import_path": "examples.serve_app:nope"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].import_path: .*it must be a bound deployment"):
        build(parse_config({"import_path": "examples.serve_app:POSITIVE"}))
    with pytest.raises(ConfigError, match=r"applications\[0\].args: .* is an application already bound"):
        build(parse_config({"import_path": APP, "args": {"x": 1}}))


def test_two_applications_may_share_deployment_names_but_not_a_route() -> None:
    a, b = build(parse_config({"applications": [{"name": "a", "import_path": APP, "route_prefix": "/a"},
                                                {"name": "b", "import_path": APP, "route_prefix": "/b"}]}))
    assert {t.name for t in a.targets} == {t.name for t in b.targets}  # names are scoped by application
    assert {t.app for t in a.targets} == {"a"} and {t.app for t in b.targets} == {"b"}
    with pytest.raises(ConfigError, match=r"route_prefix"):
        build(parse_config({"applications": [{"name": "a", "import_path": APP, "route_prefix": "/a"},
                                             {"name": "b", "import_path": APP, "route_prefix": "/a"}]}))


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
    assert (target.name, init_args, built.route_prefix) == ("Echo", ("hi",), "/")
    with pytest.raises(ConfigError, match=r"applications\[0\].args: the application builder .* raised KeyError"):
        build(parse_config({"import_path": "tests.unit.test_schema:echo_builder", "args": {"prefx": "hi"}}))
    other, = build(parse_config({"import_path": "tests.unit.test_schema:echo_builder", "args": {"prefix": "ho"}}))
    assert other.targets[0].version != target.version, "other constructor arguments: a roll"
    (from_cli,) = build(single_app("tests.unit.test_schema:echo_builder", "e", "/e", args={"prefix": "hi"}))
    assert (from_cli.targets[0].version, from_cli.route_prefix) == (target.version, "/e")


def test_a_pickle_from_before_a_field_was_added_loads_with_its_default() -> None:
    """The controller's checkpoint pickles HTTPOptions and deployment configs: after an
    upgrade adds a field, the old pickle must load and read the new field's default."""
    import pickle

    from serve import HTTPOptions

    class Old:  # pickles as HTTPOptions did before body_idle_timeout_s existed
        def __reduce_ex__(self, protocol: int) -> tuple:
            state = dict(HTTPOptions(port=8123).__getstate__())
            state["__dict__"] = {k: v for k, v in state["__dict__"].items() if k != "body_idle_timeout_s"}
            return (object.__new__, (HTTPOptions,), state)

    loaded = pickle.loads(pickle.dumps(Old()))
    assert type(loaded) is HTTPOptions
    assert loaded.port == 8123 and loaded.body_idle_timeout_s == 30
    assert loaded == HTTPOptions(port=8123)
