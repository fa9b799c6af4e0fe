"""Serve config files: read, parse and validate them (Ray Serve 2.x shape) before anything changes.

    http_options: {host: 127.0.0.1, port: 8000, location: HeadOnly, ...}
    applications:
      - name: app1                      # unique; default "default" for a single application
        route_prefix: /app1             # default: the ingress deployment's own; null: no HTTP
        import_path: package.module:app # an Application, a Deployment, or a builder f(args)
        args: {...}                     # only for a builder
        deployments:                    # option overrides, by deployment name
          - {name: Model, num_replicas: 2, user_config: {...}}

A single application may sit at the top level instead (`import_path:`, `deployments:`...);
its errors then name the fields as the file has them (`deployments[0].num_replicas`).
`proxy_location` (Ray 2.x) is accepted as `http_options.location` ("Disabled" = "NoServer").

Invariants: validation is pure (no import, no cluster) and is the models' own (`ServeConfig`,
`AppConfig`, `DeploymentOverride`, with `HTTPOptions` and `AutoscalingConfig`): the deployment
options a file may set are `DeploymentConfig`'s fields, checked exactly as
`@serve.deployment(...)` checks them. Every problem found is reported at once, one line each,
starting with its field path (`applications[0].deployments[1].num_replicas: must be an
integer >= 0, got -1`). A file is read with libyaml when present, and refused unread past
`$ZEROSERVE_CONFIG_MAX_BYTES` (10 MiB). `config_json_schema()` is the JSON Schema of the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError
from pydantic.json_schema import SkipJsonSchema

from ._config import DEFAULT, DeploymentConfig, HTTPOptions, RoutePrefix
from ._fields import FILE_CONTEXT
from ._model import Model, Must, PositiveSeconds, Problem, Rule, invalid, problems, wrong
from ._obs_config import LoggingConfig, TracingConfig
from .exceptions import ConfigError

__all__ = ["AppConfig", "DeploymentOverride", "MAX_CONFIG_BYTES", "ServeConfig", "app_data", "buildable_apps",
           "check_config", "config_error", "config_json_schema", "load_config", "parse_config", "read_config",
           "single_app"]

MAX_CONFIG_BYTES = 10 * 1024 * 1024
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's C parser when present


def _tuple(value: Any) -> Any:
    """A YAML list as the tuple a field holds (None: empty); anything else is left to fail."""
    return () if value is None else tuple(value) if isinstance(value, list) else value


def _non_empty_tuple(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and not value:
        raise invalid()
    return _tuple(value)


def _no_runtime_env(value: Any) -> Any:
    if value:
        raise wrong("not supported; install the application's code and dependencies on every node (or start the "
                    "nodes from the project directory)")
    return value


class DeploymentOverride(DeploymentConfig):
    """Options the config sets on one deployment of the application, by its name; an option
    left out keeps the deployment's own value (from `@serve.deployment(...)`)."""

    must: ClassVar[str] = "a mapping with a `name` and options, such as {name: Model, num_replicas: 2}"
    schema_defaults: ClassVar[bool] = False
    replicas_or_autoscaling: ClassVar[bool] = True

    name: Annotated[str, Field(min_length=1), Must("the name of a deployment of the application")]
    """The deployment's name, as `@serve.deployment` (or `.options(name=...)`) gave it."""

    @property
    def options(self) -> dict[str, Any]:
        """The options the config sets (current names), without `name`."""
        return {k: v for k, v in self if k in self.model_fields_set and k != "name"}

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> tuple[dict[str, Any], list[Rule]]:
        data, broken = super()._prepare(data)
        if "route_prefix" in data:
            broken.append(Rule(("route_prefix",), "set route_prefix on the application, not on a deployment"))
            data = {k: v for k, v in data.items() if k != "route_prefix"}
        return data, broken


_IMPORT_PATH = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*|\.[A-Za-z_]\w*)$"


class AppConfig(Model):
    """One application: what to import, where to serve it, and options for its deployments."""

    must: ClassVar[str] = "a mapping with at least `import_path`"

    name: Annotated[str, Field(min_length=1, pattern=r"^[^#]*$"), Must("a non-empty string without '#'")] = "default"
    """The application's name, unique in the config (needed when there are several)."""
    import_path: Annotated[str, Field(pattern=_IMPORT_PATH),
                           Must("an import path such as 'package.module:app' (or 'package.module.app')")]
    """Where the application is: a bound deployment (`app = Model.bind()`), a deployment, or a builder
    function `def app(args) -> Application`; importable from the current directory or the Python path."""
    route_prefix: RoutePrefix = Field(default_factory=lambda: DEFAULT)
    """The HTTP route of the application's ingress deployment (default: the deployment's own; null: none)."""
    args: Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v),
                    Must("a mapping (passed to the application builder)")] = {}
    """Arguments for the builder function named by import_path."""
    deployments: Annotated[tuple[DeploymentOverride, ...], BeforeValidator(_tuple),
                           Must("a list of {name: ..., <option>: ...}")] = ()
    """Options for deployments of the application, by name."""
    runtime_env: Annotated[Any, BeforeValidator(_no_runtime_env), SkipJsonSchema()] = None
    """Not supported: install the application's code on every node."""
    logging_config: LoggingConfig | None = None
    """How the application's deployments log, unless a deployment sets its own."""

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        deployments = values.get("deployments")
        names = [_get(d, "name") for d in deployments] if isinstance(deployments, (list, tuple)) else []
        yield from _unique(names, "deployments", "name", "give each deployment's options once")


class _ServeWide(Model):
    http_options: Annotated[HTTPOptions, BeforeValidator(lambda v: {} if v is None else v)] = Field(
        default_factory=HTTPOptions)
    """Where and how the HTTP proxies listen (used when Serve starts)."""
    proxy_location: Literal["HeadOnly", "EveryNode", "NoServer", "Disabled"] | None = None
    """Ray 2.x's name of http_options.location ("Disabled": "NoServer")."""
    logging_config: LoggingConfig | None = None
    """How Serve's controller and proxies log (used when Serve starts), and every deployment's default."""
    tracing_config: TracingConfig | None = None
    """OpenTelemetry tracing of requests (used when Serve starts; needs zeroserve[tracing])."""
    deploy_timeout_s: PositiveSeconds | None = None
    """How long a deploy waits for every deployment to be ready (default 300, or $ZEROSERVE_DEPLOY_TIMEOUT_S)."""


class ServeConfig(_ServeWide):
    """A Serve config file (`zeroserve serve deploy/run CONFIG.yaml`)."""

    must: ClassVar[str] = "a mapping with `applications:` (or a top-level `import_path:`)"

    applications: Annotated[tuple[AppConfig, ...], BeforeValidator(_non_empty_tuple),
                            Field(json_schema_extra={"minItems": 1}),
                            Must("a non-empty list of applications, each with an `import_path`")]
    """The applications to run; those already running and not listed are deleted (deploy)."""

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> tuple[dict[str, Any], list[Rule]]:
        data, broken = super()._prepare(data)
        app_fields = [k for k in data if k not in cls.model_fields] if "import_path" in data else []
        if app_fields:  # the single-application form (unknown fields are the application's)
            rest = {k: v for k, v in data.items() if k not in app_fields}
            if "applications" in data:
                broken.append(Rule((), "give either `applications:` or a top-level `import_path:`, not both"))
                data = rest
            else:  # the single-application form
                data = {**rest, "applications": [{k: data[k] for k in app_fields}]}
        location = data.get("proxy_location")
        http = data.get("http_options")
        if isinstance(location, str) and location in _PROXY_LOCATIONS and (http is None or isinstance(http, Mapping)):
            http = dict(http or {})
            if http.setdefault("location", _PROXY_LOCATIONS[location]) != _PROXY_LOCATIONS[location]:
                broken.append(Rule(("proxy_location",), f"{location!r} disagrees with http_options.location "
                                                        f"{http['location']!r}; give only one"))
            data = {**data, "http_options": http}
        return data, broken

    @classmethod
    def _rules(cls, values: Mapping[str, Any], given: set[str]) -> Iterator[Rule]:
        apps = values.get("applications")
        if not isinstance(apps, (list, tuple)):
            return
        names: list[str | None] = []
        for i, app in enumerate(apps):
            if not isinstance(app, (Mapping, AppConfig)):
                names.append(None)
            elif _given(app, "name"):
                names.append(_get(app, "name"))
            elif len(apps) > 1:
                yield Rule(("applications", i, "name"), "required when the config has several applications")
                names.append(None)
            else:
                names.append("default")
        yield from _unique(names, "applications", "name", "application names must be unique")
        yield from _unique([_get(app, "route_prefix") for app in apps], "applications", "route_prefix",
                           "two applications cannot share a route_prefix")


_PROXY_LOCATIONS = {"HeadOnly": "HeadOnly", "EveryNode": "EveryNode", "NoServer": "NoServer", "Disabled": "NoServer"}


class SingleAppConfig(AppConfig, _ServeWide):
    """A Serve config file with one application, its fields at the top level."""


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def _given(item: Any, key: str) -> bool:
    return key in item if isinstance(item, Mapping) else key in getattr(item, "model_fields_set", ())


def _unique(values: list[Any], field: str, key: str, why: str) -> Iterator[Rule]:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if isinstance(value, str):
            if value in seen:
                yield Rule((field, i, key), f"{value!r} is also used by {field}[{seen[value]}]; {why}")
            seen.setdefault(value, i)


# -- reading, checking, reporting ----------------------------------------------------------------


def _max_bytes() -> int:
    value = os.environ.get("ZEROSERVE_CONFIG_MAX_BYTES", str(MAX_CONFIG_BYTES))
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"ZEROSERVE_CONFIG_MAX_BYTES must be a number of bytes, got {value!r}") from None


def read_config(path: str | Path) -> Any:
    """The parsed YAML of a config file (not yet validated); ConfigError if it cannot be read,
    is larger than $ZEROSERVE_CONFIG_MAX_BYTES (checked before parsing) or is not YAML."""
    limit = _max_bytes()
    try:
        with Path(path).open("rb") as f:
            text = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {e.strerror or e}") from None
    if len(text) > limit:
        raise ConfigError(f"{path}: the config file is larger than {limit} bytes, so it was not read (a Serve config "
                          "is a few KiB); set $ZEROSERVE_CONFIG_MAX_BYTES to allow more")
    try:
        return yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = " ".join(str(p) for p in (getattr(e, "problem", None), getattr(e, "context", None)) if p) or str(e)
        raise ConfigError(f"{path}: not valid YAML{where}: {what}") from None


def check_config(data: Any) -> tuple[ServeConfig | None, list[Problem]]:
    """`data` (a parsed config file) validated: the config, or None and every problem found."""
    try:
        return ServeConfig.model_validate(data, context={FILE_CONTEXT: True}), []
    except ValidationError as e:
        return None, problems(e, ServeConfig)


def config_error(found: list[Problem], source: str, data: Any = None) -> ConfigError:
    """One ConfigError listing `found` (field and build problems alike), by application, as
    the file `data` has them (a single application's fields at the top level)."""
    single = isinstance(data, Mapping) and "applications" not in data and "import_path" in data
    lines = []
    for p in sorted(found, key=_by_application):
        if single and p.loc[:2] == ("applications", 0):
            p = p.moved(p.loc[2:])
        lines.append(p.line())
    return ConfigError(f"invalid config {source}:\n  " + "\n  ".join(lines))


def _by_application(p: Problem) -> tuple[int, int]:
    return (1, p.loc[1]) if p.loc[:1] == ("applications",) and len(p.loc) > 1 and isinstance(p.loc[1], int) else (0, 0)


def parse_config(data: Any, source: str = "config") -> ServeConfig:
    """`data` (a parsed config file) validated; ConfigError listing every problem."""
    config, found = check_config(data)
    if config is None:
        raise config_error(found, source, data)
    return config


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a YAML config file; ConfigError says what to change."""
    return parse_config(read_config(path), source=str(path))


def app_data(import_path: str, name: str = "default", route_prefix: Any = DEFAULT,
             http_options: Mapping[str, Any] | None = None, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config (as data) of `zeroserve serve run MODULE:APP [key=value ...]`."""
    app: dict[str, Any] = {"name": name, "import_path": import_path}
    if args:
        app["args"] = dict(args)
    if route_prefix is not DEFAULT:
        app["route_prefix"] = route_prefix
    return {"applications": [app], **({"http_options": dict(http_options)} if http_options else {})}


def single_app(import_path: str, name: str = "default", route_prefix: Any = DEFAULT,
               http_options: Mapping[str, Any] | None = None, args: Mapping[str, Any] | None = None) -> ServeConfig:
    """The config of `zeroserve serve run MODULE:APP [key=value ...]` (validated like a file's)."""
    return parse_config(app_data(import_path, name, route_prefix, http_options, args), source=import_path)


def buildable_apps(data: Any) -> list[tuple[int, AppConfig, list[tuple[int, str]]]]:
    """For a config with errors: each application that can still be imported (a valid
    `import_path` and `args`), with the deployment names its `deployments:` give, by index, so
    that import errors and unknown names are reported along with the field errors."""
    if not isinstance(data, Mapping):
        return []
    apps = data.get("applications")
    if "applications" not in data and "import_path" in data:
        apps = [data]
    if not isinstance(apps, (list, tuple)):
        return []
    out = []
    for i, raw in enumerate(apps):
        if not isinstance(raw, Mapping):
            continue
        core = {k: raw[k] for k in ("import_path", "args", "name", "route_prefix") if k in raw}
        app = _valid_app(core) or _valid_app({k: v for k, v in core.items() if k in ("import_path", "args")})
        deployments = raw.get("deployments")
        if app is None:
            continue
        names = [(j, d["name"]) for j, d in enumerate(deployments) if isinstance(d, Mapping)
                 and isinstance(d.get("name"), str) and d["name"]] if isinstance(deployments, (list, tuple)) else []
        out.append((i, app, names))
    return out


def _valid_app(data: dict[str, Any]) -> AppConfig | None:
    try:
        return AppConfig.model_validate(data, context={FILE_CONTEXT: True})
    except ValidationError:
        return None


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of a Serve config file (for editors), from the models above."""
    schema = TypeAdapter(ServeConfig | SingleAppConfig).json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "zeroserve Serve config",
            "description": "A Serve config file: `zeroserve serve deploy CONFIG.yaml` / `zeroserve serve run "
                           "CONFIG.yaml`. Several applications under `applications:`, or one at the top level.",
            **schema}

