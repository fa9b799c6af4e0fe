"""`@serve.deployment`: Deployment objects, `.options()`, `.bind()` and `.deploy()`.

A Deployment is a value: the user's class or function plus validated options.
`.bind(*args)` makes an `Application` (a node of a deployment graph); `.deploy(*args)`
(the 1.x style) sends one target to the controller and waits until it is running.
"""

from __future__ import annotations

import importlib
import inspect
import secrets
from typing import Any

from actors.system import dumps_code

from .._config import DEFAULT, config_from, validate_options
from .._data.handle import DeploymentHandle, RayServeHandle
from ..messages import DEFAULT_APP, DeploymentId, DeploymentTarget
from . import startup
from .graph import Application, check_bind_args

__all__ = ["Deployment", "deployment"]


class Deployment:
    def __init__(self, func_or_class: Any, options: dict[str, Any], app: str = DEFAULT_APP) -> None:
        if not (inspect.isclass(func_or_class) or inspect.isfunction(func_or_class)):
            raise TypeError(f"@serve.deployment decorates a class or a function, got {func_or_class!r}")
        self._app = app  # the application it is part of (1.x deploys: the default one)
        self._func_or_class = func_or_class
        self._options = validate_options(options)
        self._options.setdefault("name", func_or_class.__name__)
        self._config = config_from(self._options)

    # -- properties ----------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._options["name"]

    @property
    def version(self) -> str | None:
        return self._options.get("version")

    @property
    def func_or_class(self) -> Any:
        return self._func_or_class

    @property
    def num_replicas(self) -> int:
        return self._config.num_replicas

    @property
    def user_config(self) -> Any:
        return self._config.user_config

    @property
    def max_ongoing_requests(self) -> int:
        return self._config.max_ongoing_requests

    max_concurrent_queries = max_ongoing_requests

    @property
    def actor_options(self) -> dict[str, Any]:
        return dict(self._config.actor_options)

    ray_actor_options = actor_options

    @property
    def init_args(self) -> tuple:
        return tuple(self._options.get("init_args", ()))

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self._options.get("init_kwargs", {}))

    @property
    def route_prefix(self) -> str | None:
        prefix = self._options.get("route_prefix", DEFAULT)
        return f"/{self.name}" if prefix is DEFAULT else prefix

    @property
    def given_route_prefix(self) -> Any:
        """The `route_prefix` option as given (None: no HTTP), or DEFAULT if it was not."""
        return self._options.get("route_prefix", DEFAULT)

    @property
    def url(self) -> str | None:
        if self.route_prefix is None:
            return None
        base = startup.http_base_url()
        return None if base is None else base + self.route_prefix

    def __repr__(self) -> str:
        return f"Deployment(name={self.name},version={self.version},route_prefix={self.route_prefix})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"deployment {self.name} cannot be called directly: use {self.name}.bind(...) with "
                           f"serve.run, {self.name}.deploy(...), or a handle")

    # -- derived deployments -------------------------------------------------------------
    def options(self, func_or_class: Any = None, **options: Any) -> "Deployment":
        """A copy with `options` changed (and, as in Ray, `func_or_class` replaced if given), of
        the same class (a subclass's copies keep its behaviour)."""
        validate_options(options)  # an unknown or wrong option fails here, naming it
        if "max_concurrent_queries" in options and "max_ongoing_requests" in self._options:
            merged = {k: v for k, v in self._options.items() if k != "max_ongoing_requests"}
        elif "ray_actor_options" in options and "actor_options" in self._options:
            merged = {k: v for k, v in self._options.items() if k != "actor_options"}
        else:
            merged = dict(self._options)
        if "autoscaling_config" in options and options["autoscaling_config"] is not None:
            merged.pop("num_replicas", None)
        if options.get("num_replicas") is not None:
            merged.pop("autoscaling_config", None)
        merged.update(options)
        return type(self)(self._func_or_class if func_or_class is None else func_or_class, merged, self._app)

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        check_bind_args(args, kwargs)
        return Application(self, args, kwargs)

    # -- 1.x API -------------------------------------------------------------------------
    def deploy(self, *init_args: Any, _blocking: bool = True, **init_kwargs: Any) -> None:
        args = init_args or self.init_args
        kwargs = init_kwargs or self.init_kwargs
        startup.running_client().deploy([self.target(args, kwargs, self._app)], wait=_blocking)

    def delete(self) -> None:
        startup.running_client().delete([DeploymentId(self._app, self.name)])

    def get_handle(self, sync: bool | None = True) -> DeploymentHandle | RayServeHandle:
        """A handle to this deployment (1.x); `sync=False`: a 1.x async handle (`ref = await
        handle.remote(...)`, then `await ref`)."""
        if sync is not None and not isinstance(sync, bool):
            raise TypeError(f"get_handle(sync=...) takes True or False, got {sync!r}")
        handle = DeploymentHandle(self.name, self._app)
        return RayServeHandle(handle) if sync is False else handle

    def target(self, init_args: tuple, init_kwargs: dict, app: str,
               route_prefix: Any = DEFAULT) -> DeploymentTarget:
        prefix = self.route_prefix if route_prefix is DEFAULT else route_prefix
        version = self.version
        return DeploymentTarget(
            name=self.name, app=app, version=version or secrets.token_hex(6),
            code=dumps_code((_portable(self._func_or_class), tuple(init_args), dict(init_kwargs))),
            config=self._config, route_prefix=prefix, is_function=inspect.isfunction(self._func_or_class),
            version_given=version is not None,
        )


class _ImportedDeployment:
    """Pickles as "import this module, take that deployment's class": what was decorated
    is importable, but the module attribute is the Deployment, so pickle's by-reference
    lookup fails and cloudpickle would copy the class (and an ingress app) by value."""

    def __init__(self, module: str, qualname: str) -> None:
        self.module, self.qualname = module, qualname

    def __reduce__(self):
        return (_import_deployment_class, (self.module, self.qualname))


def _import_deployment_class(module: str, qualname: str) -> Any:
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj.func_or_class if isinstance(obj, Deployment) else obj


def _portable(func_or_class: Any) -> Any:
    module, qualname = func_or_class.__module__, func_or_class.__qualname__
    if module != "__main__" and "<locals>" not in qualname:
        try:
            if _import_deployment_class(module, qualname) is func_or_class:
                return _ImportedDeployment(module, qualname)
        except (ImportError, AttributeError):
            pass
    return func_or_class


def deployment(_func_or_class: Any = None, name: Any = DEFAULT, **options: Any) -> Any:
    """`@serve.deployment`, `@serve.deployment(name=..., num_replicas=..., ...)`, or (as in
    Ray) `@serve.deployment("name", ...)` with the name first; `serve.deployment(cls, **options)`
    makes a deployment of `cls` at once."""
    if isinstance(_func_or_class, str):  # @serve.deployment("name", ...)
        if name is not DEFAULT:
            raise TypeError(f"@serve.deployment got the name twice: {_func_or_class!r} and name={name!r}")
        _func_or_class, name = None, _func_or_class
    if name is not DEFAULT:
        options = {"name": name, **options}
    if _func_or_class is not None:
        return Deployment(_func_or_class, options)
    validate_options(options)  # fail at the decorator, not later
    return lambda f: Deployment(f, options)
