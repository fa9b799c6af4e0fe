"""Serve config files: parse and validate them (Ray Serve 2.x shape) before anything changes.

    http_options: {host: 127.0.0.1, port: 8000, location: HeadOnly, ...}
    applications:
      - name: app1                      # unique; default "default" for a single application
        route_prefix: /app1             # default: the ingress deployment's own; null: no HTTP
        import_path: package.module:app # an Application, a Deployment, or a builder f(args)
        args: {...}                     # only for a builder
        deployments:                    # option overrides, by deployment name
          - {name: Model, num_replicas: 2, user_config: {...}}

A single application may sit at the top level instead (`import_path:`, `deployments:`...).
`proxy_location` (Ray 2.x) is accepted as `http_options.location` ("Disabled" = "NoServer").

Invariants: validation is pure (no import, no cluster); every problem found is reported at
once, one line each, starting with its field path (`applications[0].deployments[1].num_replicas:
must be an integer >= 0, got -1`); unknown fields are errors; option values go through
`_config.validate_options`, the checks `@serve.deployment(...)` runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._config import DEFAULT, HTTPOptions, validate_options, validate_route_prefix
from .exceptions import ConfigError

__all__ = ["AppConfig", "DeploymentOverride", "ServeConfig", "load_config", "parse_config", "single_app"]

OVERRIDE_OPTIONS = (
    "num_replicas", "max_ongoing_requests", "max_concurrent_queries", "max_queued_requests", "user_config",
    "autoscaling_config", "actor_options", "ray_actor_options", "health_check_period_s", "health_check_timeout_s",
    "graceful_shutdown_wait_loop_s", "graceful_shutdown_timeout_s",
)
_APP_FIELDS = ("name", "route_prefix", "import_path", "args", "deployments", "runtime_env")
_TOP_FIELDS = ("http_options", "proxy_location", "applications")
_PROXY_LOCATIONS = {"HeadOnly": "HeadOnly", "EveryNode": "EveryNode", "NoServer": "NoServer", "Disabled": "NoServer"}
_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


@dataclass(frozen=True, slots=True)
class DeploymentOverride:
    """Options a config sets on one deployment of an application (canonical names)."""

    name: str
    options: dict[str, Any]
    path: str  # "applications[0].deployments[1]"


@dataclass(frozen=True, slots=True)
class AppConfig:
    name: str
    import_path: str
    route_prefix: Any  # DEFAULT (the ingress deployment's own), None (no HTTP) or "/..."
    args: dict[str, Any]
    deployments: tuple[DeploymentOverride, ...]
    path: str  # "applications[0]"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    http_options: dict[str, Any]  # only what the file gives (validated), for serve.start
    applications: tuple[AppConfig, ...]


def single_app(import_path: str, name: str = "default", route_prefix: Any = DEFAULT,
               http_options: dict[str, Any] | None = None, args: dict[str, Any] | None = None) -> ServeConfig:
    """The config of `zeroserve serve run MODULE:APP [key=value ...]` (validated like a file's)."""
    data: dict[str, Any] = {"applications": [{"name": name, "import_path": import_path}]}
    if args:
        data["applications"][0]["args"] = args
    if route_prefix is not DEFAULT:
        data["applications"][0]["route_prefix"] = route_prefix
    if http_options:
        data["http_options"] = http_options
    return parse_config(data)


def load_config(path: str | Path) -> ServeConfig:
    """Read and validate a YAML config file; ConfigError says what to change."""
    try:
        with Path(path).open() as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(data, source=str(path))


def parse_config(data: Any, source: str = "config") -> ServeConfig:
    errors: list[str] = []
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the config must be a mapping with `applications:` (or a top-level "
                          f"`import_path:`), got {type(data).__name__}")
    data = dict(data)
    if "import_path" in data:  # the single-application form
        if "applications" in data:
            raise ConfigError(f"{source}: give either `applications:` or a top-level `import_path:`, not both")
        app = {k: data.pop(k) for k in _APP_FIELDS if k in data}
        data["applications"] = [app]
    _unknown(data, _TOP_FIELDS + _APP_FIELDS, "", errors)
    http = _http_options(data.get("http_options"), data.get("proxy_location"), errors)
    apps_data = data.get("applications")
    apps: list[AppConfig] = []
    if not isinstance(apps_data, list) or not apps_data:
        errors.append("applications: must be a non-empty list of applications, each with an `import_path`")
    else:
        for i, app in enumerate(apps_data):
            parsed = _app(app, f"applications[{i}]", single=len(apps_data) == 1, errors=errors)
            if parsed is not None:
                apps.append(parsed)
        _unique(apps, lambda a: a.name, "name", "application names must be unique", errors)
        _unique([a for a in apps if isinstance(a.route_prefix, str)], lambda a: a.route_prefix, "route_prefix",
                "two applications cannot share a route_prefix", errors)
    if errors:
        raise ConfigError(f"invalid config {source}:\n  " + "\n  ".join(errors))
    return ServeConfig(http, tuple(apps))


def _unknown(data: Mapping, valid: tuple[str, ...], path: str, errors: list[str], hint: str = "") -> None:
    for key in data:
        if key not in valid:
            errors.append(f"{path}{key}: unknown field{hint}; valid fields here are {', '.join(valid)}")


def _unique(items: list, key: Any, field: str, why: str, errors: list[str]) -> None:
    seen: dict[Any, str] = {}
    for item in items:
        k = key(item)
        if k in seen:
            errors.append(f"{item.path}.{field}: {k!r} is also used by {seen[k]}; {why}")
        seen.setdefault(k, item.path)


def _http_options(value: Any, proxy_location: Any, errors: list[str]) -> dict[str, Any]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        errors.append(f"http_options: must be a mapping such as {{host: 127.0.0.1, port: 8000}}, got {value!r}")
        return {}
    out = dict(value)
    if proxy_location is not None:
        if proxy_location not in _PROXY_LOCATIONS:
            errors.append(f"proxy_location: must be one of {', '.join(_PROXY_LOCATIONS)}, got {proxy_location!r}")
        elif "location" in out and out["location"] != _PROXY_LOCATIONS[proxy_location]:
            errors.append(f"proxy_location: {proxy_location!r} disagrees with http_options.location "
                          f"{out['location']!r}; give only one")
        else:
            out["location"] = _PROXY_LOCATIONS[proxy_location]
    bad = False
    if "middlewares" in out:
        errors.append("http_options.middlewares: not supported in a config file (middlewares are Python objects); "
                      "pass them to serve.start(http_options={'middlewares': [...]}) in Python")
        out.pop("middlewares")
    for key in out:
        try:
            HTTPOptions.of({key: out[key]})
        except (TypeError, ValueError) as e:
            msg = str(e)
            if msg.startswith("unknown http_options"):
                errors.append(f"http_options.{key}: unknown field; {msg.split(';', 1)[-1].strip()}")
            else:
                errors.append(f"http_options.{key}: {_strip(msg, f'http_options {key} ')}")
            bad = True
    if not bad:
        try:
            HTTPOptions.of(out)
        except (TypeError, ValueError) as e:
            errors.append(f"http_options: {e}")
    return out


def _strip(msg: str, prefix: str) -> str:
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _app(app: Any, path: str, single: bool, errors: list[str]) -> AppConfig | None:
    if not isinstance(app, Mapping):
        errors.append(f"{path}: must be a mapping with at least `import_path`, got {app!r}")
        return None
    _unknown(app, _APP_FIELDS, f"{path}.", errors)
    ok = True
    name = app.get("name", "default" if single else None)
    if not isinstance(name, str) or not name or "#" in name:
        errors.append(f"{path}.name: " + ("required when the config has several applications" if name is None
                                          else f"must be a non-empty string without '#', got {name!r}"))
        ok = False
    import_path = app.get("import_path")
    if not isinstance(import_path, str) or not _IMPORT_PATH.match(import_path) or "." not in import_path.replace(":", "."):
        errors.append(f"{path}.import_path: " + ("required" if import_path is None else
                      f"must look like 'package.module:app' (or 'module.app'), got {import_path!r}"))
        ok = False
    route_prefix = app.get("route_prefix", DEFAULT)
    if route_prefix is not DEFAULT:
        try:
            route_prefix = validate_route_prefix(route_prefix)
        except ValueError as e:
            errors.append(f"{path}.route_prefix: {_strip(str(e), 'route_prefix ')}")
            ok = False
    args = app.get("args") or {}
    if not isinstance(args, Mapping):
        errors.append(f"{path}.args: must be a mapping (passed to the application builder), got {args!r}")
        ok = False
    if app.get("runtime_env"):
        errors.append(f"{path}.runtime_env: not supported; install the application's code and dependencies on "
                      "every node (or start the nodes from the project directory)")
        ok = False
    overrides = _overrides(app.get("deployments"), path, errors)
    if not ok or overrides is None:
        return None
    return AppConfig(name, import_path, route_prefix, dict(args), overrides, path)


def _overrides(value: Any, app_path: str, errors: list[str]) -> tuple[DeploymentOverride, ...] | None:
    if value is None:
        return ()
    if not isinstance(value, list):
        errors.append(f"{app_path}.deployments: must be a list of {{name: ..., <option>: ...}}, got {value!r}")
        return None
    out: list[DeploymentOverride] = []
    before = len(errors)
    for j, dep in enumerate(value):
        path = f"{app_path}.deployments[{j}]"
        if not isinstance(dep, Mapping):
            errors.append(f"{path}: must be a mapping with a `name` and options, got {dep!r}")
            continue
        name = dep.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"{path}.name: " + ("required: the name of a deployment of the application"
                                              if name is None else f"must be a deployment name, got {name!r}"))
        options = {k: v for k, v in dep.items() if k != "name"}
        for key in options:
            if key == "route_prefix":
                errors.append(f"{path}.route_prefix: set route_prefix on the application, not on a deployment")
            elif key not in OVERRIDE_OPTIONS:
                errors.append(f"{path}.{key}: unknown field; valid fields here are name, {', '.join(OVERRIDE_OPTIONS)}")
        options = {k: v for k, v in options.items() if k in OVERRIDE_OPTIONS}
        checked = _check_options(options, path, errors)
        if isinstance(name, str) and name and checked is not None:
            out.append(DeploymentOverride(name, checked, path))
    _unique(out, lambda d: d.name, "name", "give each deployment's options once", errors)
    return tuple(out) if len(errors) == before else None


def _check_options(options: dict[str, Any], path: str, errors: list[str]) -> dict[str, Any] | None:
    """Each option alone (to name its field), then all together (for rules across options)."""
    before = len(errors)
    for key, value in options.items():
        try:
            validate_options({key: value})
        except (TypeError, ValueError) as e:
            msg = str(e)
            auto = re.match(r"autoscaling config: (\w+) (.*)", msg, re.S)
            if key == "autoscaling_config" and auto and auto.group(1) in (value if isinstance(value, Mapping) else {}):
                errors.append(f"{path}.autoscaling_config.{auto.group(1)}: {auto.group(2)}")
            else:
                errors.append(f"{path}.{key}: {_strip(_strip(msg, key + ' '), 'autoscaling config: ')}")
    if len(errors) > before:
        return None
    try:
        return validate_options(options)
    except (TypeError, ValueError) as e:
        errors.append(f"{path}: {e}")
        return None
