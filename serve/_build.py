"""From a validated config to deployment targets: import the apps, apply overrides, pin versions.

Nothing here touches a cluster, so a config that cannot be built fails before anything
changes. Errors are `ConfigError`s naming the config field (`applications[0].import_path`,
`applications[0].deployments[1].name`).

Versions: a deployment without an explicit `version` gets one computed from what its
replicas are built from (its pickled code and constructor arguments, the source file of
its class or function, `actor_options`, `max_ongoing_requests`). Deploying an unchanged
config therefore changes nothing; a changed `num_replicas`, `user_config` or autoscaling
setting is applied to the live replicas; anything else rolls them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import traceback
from dataclasses import dataclass
from typing import Any

from ._api.application import app_targets
from ._api.deployment import Deployment
from ._api.graph import Application
from ._schema import AppConfig, ServeConfig
from .exceptions import ConfigError
from .messages import DeploymentTarget

__all__ = ["BuiltApp", "build", "import_attr"]


@dataclass(frozen=True, slots=True)
class BuiltApp:
    config: AppConfig
    targets: tuple[DeploymentTarget, ...]
    ingress: str
    route_prefix: str | None  # where the ingress is served


def import_attr(import_path: str) -> Any:
    """`package.module:attr` (or `package.module.attr`) -> the object."""
    module, sep, attr = import_path.partition(":")
    if not sep:
        module, _, attr = import_path.rpartition(".")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _load(app: AppConfig) -> Application:
    where = f"{app.path}.import_path"
    try:
        obj = import_attr(app.import_path)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"{where}: cannot import {app.import_path!r}: {type(e).__name__}: {e} (the module must "
                          "be importable from the current directory or the Python path)") from None
    except Exception as e:
        last = traceback.extract_tb(e.__traceback__)[-1]
        raise ConfigError(f"{where}: importing {app.import_path!r} raised {type(e).__name__}: {e} "
                          f"({last.filename}:{last.lineno})") from None
    if isinstance(obj, Deployment):
        obj = obj.bind()
    if not isinstance(obj, Application) and callable(obj) and not inspect.isclass(obj):
        try:
            obj = obj(dict(app.args))
        except Exception as e:
            raise ConfigError(f"{app.path}.args: the application builder {app.import_path} raised "
                              f"{type(e).__name__}: {e}") from None
        if isinstance(obj, Deployment):
            obj = obj.bind()
        if not isinstance(obj, Application):
            raise ConfigError(f"{where}: the builder {app.import_path} must return a bound deployment "
                              f"(Model.bind(...)), it returned {type(obj).__name__}")
    elif app.args:
        raise ConfigError(f"{app.path}.args: {app.import_path} is an application already bound; args need "
                          "import_path to name a builder function `def build(args) -> Application`")
    if not isinstance(obj, Application):
        raise ConfigError(f"{where}: {app.import_path} is a {type(obj).__name__}; it must be a bound deployment "
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
    elif hasattr(type(node), "_graph_children"):  # a call node of a deployment graph
        _deployments(node._graph_children(), out)
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


def _apply(target: DeploymentTarget, options: dict[str, Any]) -> DeploymentTarget:
    changes = dict(options)
    if "num_replicas" in changes:
        changes["autoscaling_config"] = None
    fields = {f.name for f in dataclasses.fields(target.config)}
    config = dataclasses.replace(target.config, **{k: v for k, v in changes.items() if k in fields})
    return dataclasses.replace(target, config=config)


def build(config: ServeConfig) -> list[BuiltApp]:
    """Import every application and make its targets; ConfigError before anything is deployed."""
    built: list[BuiltApp] = []
    owner: dict[str, str] = {}  # deployment name -> application path
    prefixes: dict[str, str] = {}
    for app in config.applications:
        root = _load(app)
        handle, targets = app_targets(root, app.name, app.route_prefix)
        by_name = {t.name: t for t in targets}
        for ov in app.deployments:
            if ov.name not in by_name:
                raise ConfigError(f"{ov.path}.name: application {app.name!r} ({app.import_path}) has no deployment "
                                  f"named {ov.name!r}; its deployments are {sorted(by_name)}")
            by_name[ov.name] = _apply(by_name[ov.name], ov.options)
        sources = _deployments(root, {})
        pinned = tuple(_pin_version(by_name[t.name], sources.get(t.name)) for t in targets)
        for t in pinned:
            if t.name in owner:
                raise ConfigError(f"{app.path}: deployment {t.name!r} is also part of {owner[t.name]}; deployment "
                                  "names are unique across applications (rename one with .options(name=...))")
            owner[t.name] = app.path
        prefix = by_name[handle.deployment_name].route_prefix
        if prefix is not None:
            if prefix in prefixes:
                raise ConfigError(f"{app.path}.route_prefix: {prefix!r} is also served by {prefixes[prefix]}; "
                                  "give each application its own route_prefix")
            prefixes[prefix] = app.path
        built.append(BuiltApp(app, pinned, handle.deployment_name, prefix))
    return built

