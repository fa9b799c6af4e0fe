"""From a validated config to deployment targets: import the apps, apply overrides, pin versions.

Nothing here touches a cluster, so a config that cannot be built fails before anything
changes. Errors are `ConfigError`s naming the config field (`applications[0].import_path`,
`applications[0].deployments[1].name`); `build_config` reports them together with the
config's field errors (an application whose other fields are wrong is still imported and
its deployment names checked), so one run shows every problem.

Versions: a deployment without an explicit `version` gets one computed from what its
replicas are built from (its pickled code and constructor arguments, the source file of
its class or function, `actor_options`, `max_ongoing_requests`). Deploying an unchanged
config therefore changes nothing; a changed `num_replicas`, `user_config` or autoscaling
setting is applied to the live replicas; anything else rolls them.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import inspect
import json
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._api.application import app_targets, with_logging
from ._api.deployment import Deployment
from ._api.graph import Application, CallNode
from ._model import Kind, Loc, Problem, path_text
from ._obs_config import LoggingConfig
from ._schema import AppConfig, DeploymentOverride, ServeConfig, buildable_apps, check_config, config_error, read_config
from .messages import DeploymentTarget

__all__ = ["BuiltApp", "build", "build_config", "import_attr", "load_and_build"]


@dataclass(frozen=True, slots=True)
class BuiltApp:
    config: AppConfig
    targets: tuple[DeploymentTarget, ...]
    ingress: str
    route_prefix: str | None  # where the ingress is served


class _Unbuildable(Exception):
    """An application that cannot be imported or built; `problem` says where and why."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.line())
        self.problem = problem


def import_attr(import_path: str) -> Any:
    """`package.module:attr` (or `package.module.attr`) -> the object."""
    module, sep, attr = import_path.partition(":")
    if not sep:
        module, _, attr = import_path.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load(app: AppConfig, at: Loc) -> Application:
    def fail(field: str, message: str) -> _Unbuildable:
        return _Unbuildable(Problem((*at, field), Kind.VALUE, message))

    try:
        obj = import_attr(app.import_path)
    except (ImportError, AttributeError) as e:
        raise fail("import_path", f"cannot import {app.import_path!r}: {type(e).__name__}: {e} (the module must be "
                                  "importable from the current directory or the Python path)") from None
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1]
        raise fail("import_path", f"importing {app.import_path!r} raised {type(e).__name__}: {e} "
                                  f"({last.filename}:{last.lineno})") from None
    if isinstance(obj, Deployment):
        obj = obj.bind()
    if not isinstance(obj, Application) and callable(obj) and not inspect.isclass(obj):
        try:
            obj = obj(dict(app.args))
        except Exception as e:
            raise fail("args", f"the application builder {app.import_path} raised {type(e).__name__}: {e}") from None
        if isinstance(obj, Deployment):
            obj = obj.bind()
        if not isinstance(obj, Application):
            raise fail("import_path", f"the builder {app.import_path} must return a bound deployment "
                                      f"(Model.bind(...)), it returned {type(obj).__name__}")
    elif app.args:
        raise fail("args", f"{app.import_path} is an application already bound; args need import_path to name a "
                           "builder function `def build(args) -> Application`")
    if not isinstance(obj, Application):
        raise fail("import_path", f"{app.import_path} is a {type(obj).__name__}; it must be a bound deployment "
                                  "(app = Model.bind(...)), a deployment, or a builder function returning one")
    return obj


def _deployments(node: Any, out: dict[str, Deployment]) -> dict[str, Deployment]:
    """Every deployment bound into `node`, by name (for their source files)."""
    if isinstance(node, Application):
        out.setdefault(node.deployment.name, node.deployment)
        for value in (*node.args, *node.kwargs.values()):
            _deployments(value, out)
    elif isinstance(node, Deployment):
        out.setdefault(node.name, node)
    elif isinstance(node, CallNode):  # a call node of a deployment graph
        _deployments(node.graph_children(), out)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _deployments(value, out)
    elif isinstance(node, dict):
        for value in node.values():
            _deployments(value, out)
    return out


def _source_digest(deployment: Deployment | None) -> str:
    try:
        path = inspect.getsourcefile(deployment.func_or_class)  # type: ignore[union-attr]
        with open(path, "rb") as f:  # type: ignore[arg-type]
            return hashlib.sha256(f.read()).hexdigest()
    except (AttributeError, TypeError, OSError):
        return ""


def _pin_version(target: DeploymentTarget, deployment: Deployment | None) -> DeploymentTarget:
    if target.version_given:
        return target
    h = hashlib.sha256(target.code)
    h.update(_source_digest(deployment).encode())
    cfg = target.config
    h.update(json.dumps([cfg.actor_options, cfg.max_ongoing_requests, target.is_function], sort_keys=True,
                        default=repr).encode())
    return dataclasses.replace(target, version=h.hexdigest()[:12], version_given=True)


def _apply(target: DeploymentTarget, override: DeploymentOverride) -> DeploymentTarget:
    changes = override.options  # validated already
    if "num_replicas" in changes:
        changes["autoscaling_config"] = None
    return dataclasses.replace(target, config=target.config.model_copy(update=changes))



Plan = tuple[int, AppConfig, list[tuple[int, str]]]  # app index, app, (index, name) of its deployment overrides


def build(config: ServeConfig) -> list[BuiltApp]:
    """Import every application and make its targets; ConfigError (every problem) before anything is deployed."""
    built, found = _build(_plans(config), config.logging_config)
    if found:
        raise config_error(found, "config")
    return built


def build_config(data: Any, source: str = "config") -> tuple[ServeConfig, list[BuiltApp]]:
    """Validate `data` (a parsed config file) and build it; one ConfigError lists every problem
    found: field errors, and the import errors and unknown deployment names of every
    application that can be imported despite them."""
    config, found = check_config(data)
    built, unbuilt = _build(_plans(config) if config is not None else buildable_apps(data),
                            config.logging_config if config is not None else None)
    if config is None or unbuilt:
        raise config_error(found + unbuilt, source, data)
    return config, built


def load_and_build(path: str | Path) -> tuple[ServeConfig, list[BuiltApp]]:
    """`build_config` of a config file (see `_schema.read_config`)."""
    return build_config(read_config(path), str(path))


def _plans(config: ServeConfig) -> list[Plan]:
    return [(i, app, [(j, d.name) for j, d in enumerate(app.deployments)]) for i, app in enumerate(config.applications)]


def _build(plans: list[Plan], serve_logging: LoggingConfig | None = None) -> tuple[list[BuiltApp], list[Problem]]:
    built: list[BuiltApp] = []
    found: list[Problem] = []
    prefixes: dict[str, str] = {}
    for i, app, names in plans:
        at: Loc = ("applications", i)
        try:
            root = _load(app, at)
            handle, targets = app_targets(root, app.name, app.route_prefix)
        except _Unbuildable as e:
            found.append(e.problem)
            continue
        except TypeError as e:  # a graph without an ingress
            found.append(Problem((*at, "import_path"), Kind.VALUE, str(e)))
            continue
        by_name = {t.name: t for t in targets}
        for j, name in names:
            if name not in by_name:
                close = difflib.get_close_matches(name, list(by_name), n=1)
                found.append(Problem((*at, "deployments", j, "name"), Kind.VALUE,
                                     f"application {app.name!r} ({app.import_path}) has no deployment named {name!r}"
                                     + (f" (did you mean {close[0]!r}?)" if close else "")
                                     + f"; its deployments are {sorted(by_name)}"))
        for override in app.deployments:
            if override.name in by_name:
                by_name[override.name] = _apply(by_name[override.name], override)
        sources = _deployments(root, {})
        logged = with_logging((by_name[t.name] for t in targets), app.logging_config or serve_logging)
        pinned = tuple(_pin_version(dataclasses.replace(t, import_path=app.import_path) if t.ingress else t,
                                    sources.get(t.name)) for t in logged)
        prefix = by_name[handle.deployment_name].route_prefix
        if prefix is not None:
            if prefix in prefixes:
                found.append(Problem((*at, "route_prefix"), Kind.VALUE, f"{prefix!r} is also served by "
                                     f"{prefixes[prefix]}; give each application its own route_prefix"))
            prefixes.setdefault(prefix, path_text(at))
        built.append(BuiltApp(app, pinned, handle.deployment_name, prefix))
    return built, found
