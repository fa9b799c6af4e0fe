"""Deployment options: validated once, at the call that gave them, into frozen values.

Both spellings of renamed options are accepted (`max_concurrent_queries` for
`max_ongoing_requests`, `ray_actor_options` for `actor_options`); a wrong option fails with
a message that names it and says what to change.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["DeploymentConfig", "DEFAULT", "HTTPOptions", "Middlewares", "OPTION_NAMES", "validate_options",
           "validate_route_prefix"]


class _Default:
    """Marks an option the user did not give (None is a meaningful value for some)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()

OPTION_NAMES = (
    "name", "version", "num_replicas", "init_args", "init_kwargs", "route_prefix", "actor_options",
    "ray_actor_options", "user_config", "max_ongoing_requests", "max_concurrent_queries", "max_queued_requests",
    "autoscaling_config", "health_check_period_s", "health_check_timeout_s", "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
)
_ACTOR_OPTIONS = ("num_cpus", "resources", "num_gpus")


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """What the controller needs to run a deployment's replicas."""

    num_replicas: int = 1
    max_ongoing_requests: int = 100
    max_queued_requests: int = -1
    user_config: Any = None
    autoscaling_config: dict[str, Any] | None = None
    health_check_period_s: float = 10.0
    health_check_timeout_s: float = 30.0
    graceful_shutdown_wait_loop_s: float = 2.0
    graceful_shutdown_timeout_s: float = 20.0
    actor_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **changes: Any) -> "DeploymentConfig":
        return dataclasses.replace(self, **changes)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _seconds(name: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a number of seconds {'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def validate_route_prefix(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"route_prefix must be None or a string starting with '/', e.g. '/api'; got {value!r}")
    if value != "/" and value.endswith("/"):
        raise ValueError(f"route_prefix must not end with '/' (except '/' itself): use {value.rstrip('/')!r}")
    if any(c in value for c in "{}?#") or "//" in value:
        raise ValueError(f"route_prefix {value!r} may not contain '{{', '}}', '?', '#' or '//'")
    return value


def _actor_options(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"actor_options must be a dict such as {{'num_cpus': 1}}, got {value!r}")
    unknown = sorted(set(value) - set(_ACTOR_OPTIONS))
    if unknown:
        raise ValueError(f"unknown actor_options {unknown}; zeroserve replicas accept {list(_ACTOR_OPTIONS)}")
    out = dict(value)
    if out.pop("num_gpus", 0):
        raise ValueError("actor_options num_gpus is not supported; request a custom resource instead, e.g. "
                         "{'resources': {'GPU': 1}} on nodes started with --resources '{\"GPU\": 1}'")
    return out


def validate_options(options: dict[str, Any]) -> dict[str, Any]:
    """Check `@serve.deployment(...)`/`.options(...)` arguments; return them normalised
    (canonical names only). Raises ValueError/TypeError naming the wrong option."""
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"unknown deployment option(s) {unknown}; valid options are {list(OPTION_NAMES)}")
    out = dict(options)
    for old, new in (("max_concurrent_queries", "max_ongoing_requests"), ("ray_actor_options", "actor_options")):
        if old in out:
            value = out.pop(old)
            if new in out and out[new] != value:
                raise ValueError(f"{old} is the old name of {new}; give only one of them")
            out[new] = value
    if "name" in out and (not isinstance(out["name"], str) or not out["name"] or "#" in out["name"]):
        raise ValueError(f"name must be a non-empty string without '#', got {out['name']!r}")
    if "version" in out and out["version"] is not None and not isinstance(out["version"], str):
        raise ValueError(f"version must be a string (or None), got {out['version']!r}")
    if "num_replicas" in out and out["num_replicas"] is not None:
        _positive_int("num_replicas", out["num_replicas"], minimum=0)
    if out.get("autoscaling_config") is not None:
        if out.get("num_replicas") not in (None, DEFAULT) and "num_replicas" in options:
            raise ValueError("give either num_replicas or autoscaling_config, not both: "
                             "autoscaling decides the number of replicas")
        if not isinstance(out["autoscaling_config"], dict):
            raise ValueError("autoscaling_config must be a dict such as {'min_replicas': 1, 'max_replicas': 4}")
        from ._autoscaling import AutoscalingConfig

        AutoscalingConfig.from_dict(out["autoscaling_config"])  # raises naming the wrong field
    if "init_args" in out and not isinstance(out["init_args"], (tuple, list)):
        raise ValueError(f"init_args must be a tuple or list, got {type(out['init_args']).__name__}")
    if "init_kwargs" in out and not isinstance(out["init_kwargs"], dict):
        raise ValueError(f"init_kwargs must be a dict, got {type(out['init_kwargs']).__name__}")
    if "route_prefix" in out:
        out["route_prefix"] = validate_route_prefix(out["route_prefix"])
    if "actor_options" in out:
        out["actor_options"] = _actor_options(out["actor_options"])
    if "max_ongoing_requests" in out:
        _positive_int("max_ongoing_requests", out["max_ongoing_requests"])
    if "max_queued_requests" in out:
        q = out["max_queued_requests"]
        if isinstance(q, bool) or not isinstance(q, int) or (q < 0 and q != -1):
            raise ValueError(f"max_queued_requests must be -1 (no limit) or an integer >= 0, got {q!r}")
    for name in ("health_check_period_s", "health_check_timeout_s", "graceful_shutdown_timeout_s"):
        if name in out:
            _seconds(name, out[name])
    if "graceful_shutdown_wait_loop_s" in out:
        _seconds("graceful_shutdown_wait_loop_s", out["graceful_shutdown_wait_loop_s"], positive=False)
    return out


def config_from(options: dict[str, Any]) -> DeploymentConfig:
    """The DeploymentConfig of validated options (defaults for what is not given)."""
    fields = {f.name for f in dataclasses.fields(DeploymentConfig)}
    given = {k: v for k, v in options.items() if k in fields and v is not DEFAULT}
    if given.get("num_replicas") is None:
        given.pop("num_replicas", None)
    return DeploymentConfig(**given)


def _default_port() -> int:
    """8000, or `$ZEROSERVE_HTTP_PORT` (so test runs and side-by-side setups do not collide)."""
    value = os.environ.get("ZEROSERVE_HTTP_PORT", "8000")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"ZEROSERVE_HTTP_PORT must be a port number, got {value!r}") from None


def _middlewares_from_blob(blob: bytes) -> "Middlewares":
    import cloudpickle

    return Middlewares(cloudpickle.loads(blob))


class Middlewares(tuple):
    """`http_options.middlewares`: Starlette `Middleware` objects, outermost first.

    A tuple that pickles its items with cloudpickle into one byte string, so that a
    middleware class defined in a driver script reaches the proxy actor, and so that plain
    `pickle` (the controller's checkpoint of its http_options) can hold it too.
    """

    __slots__ = ()

    def __reduce__(self) -> tuple:
        import cloudpickle

        return (_middlewares_from_blob, (cloudpickle.dumps(tuple(self)),))

    def __deepcopy__(self, memo: dict) -> "Middlewares":
        return self  # immutable as far as serve is concerned; dataclasses.asdict copies


def _validate_middlewares(value: Any) -> Middlewares:
    try:
        from starlette.middleware import Middleware
    except ImportError:  # pragma: no cover - starlette is a dependency
        raise ValueError("http_options middlewares need starlette installed") from None
    example = "[Middleware(CORSMiddleware, allow_origins=['*'])] (from starlette.middleware import Middleware)"
    if value is None:
        return Middlewares()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"http_options middlewares must be a list of starlette Middleware objects such as "
                         f"{example}; got {type(value).__name__} {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, Middleware):
            hint = (f"wrap it: Middleware({item.__name__}, ...)" if isinstance(item, type)
                    else "give Middleware(cls, *args, **kwargs) objects")
            raise ValueError(f"http_options middlewares[{i}] is {item!r}, not a starlette Middleware; {hint}, "
                             f"e.g. {example}")
        if not callable(item.cls):
            raise ValueError(f"http_options middlewares[{i}]: Middleware({item.cls!r}) does not wrap a middleware "
                             "class or factory (called as cls(app, *args, **kwargs))")
    out = Middlewares(value)
    import cloudpickle

    try:
        cloudpickle.dumps(tuple(out))
    except Exception as e:
        raise ValueError(f"http_options middlewares must pickle with cloudpickle to reach the HTTP proxy; "
                         f"pickling failed: {type(e).__name__}: {e}. Pass picklable arguments (no locks, "
                         "sockets or open files) and create such resources inside the middleware") from None
    return out


def _validate_root_path(value: Any) -> str:
    if value is None or value == "":
        return ""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"http_options root_path must be '' or a path starting with '/', such as '/serve'; "
                         f"got {value!r}" + (f": use {'/' + value.strip('/')!r}" if isinstance(value, str) else ""))
    if value == "/" or value.endswith("/"):
        suggestion = value.rstrip("/")
        raise ValueError(f"http_options root_path must not end with '/': use {suggestion!r}"
                         + (" (the empty string: no prefix)" if not suggestion else ""))
    if any(c in value for c in "{}?#") or "//" in value:
        raise ValueError(f"http_options root_path {value!r} may not contain '{{', '}}', '?', '#' or '//'")
    return value


_LOCATIONS = ("HeadOnly", "EveryNode", "NoServer")


def _did_you_mean(value: Any, choices: tuple[str, ...]) -> str:
    import difflib

    close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
    return f" (did you mean {close[0]!r}?)" if close else ""


def _validate_host(value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"http_options host must be an IP address or host name such as '127.0.0.1' or '0.0.0.0' "
                         f"(or 'node': each node's own IP), got {value!r}")


def _validate_port(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        hint = ""
        if isinstance(value, str) and value.strip().isdigit():
            hint = f": give the number {int(value)}, not the string {value!r}"
        elif value == 0:
            hint = " (0, an ephemeral port, is not supported: the proxies must listen on a known port)"
        raise ValueError(f"http_options port must be an integer in 1..65535, got {value!r}{hint}")


def _positive_seconds(name: str, value: Any, alternative: str) -> float:
    """A positive, finite number of seconds (an int or a float)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        hint = ""
        if isinstance(value, str):
            try:
                hint = f": give the number {float(value):g}, not the string {value!r}"
            except ValueError:
                pass
        raise ValueError(f"http_options {name} must be a positive number of seconds{alternative}, "
                         f"got {value!r}{hint}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"http_options {name} must be a positive number of seconds{alternative}, got {value!r}")
    return value


def _validate_max_body_bytes(value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"http_options max_body_bytes must be a positive integer number of bytes "
                         f"(default {100 * 1024 * 1024}, 100 MiB), got {value!r}")


@dataclass(frozen=True, slots=True)
class HTTPOptions:
    """Where and how the HTTP proxies listen (`serve.start(http_options=...)`).

    `middlewares`: Starlette `Middleware` objects wrapping each proxy's ASGI app (first is
    outermost). `root_path`: the prefix the proxies are mounted under (as behind a reverse
    proxy): requests must begin with it, routes match after it, and apps see it in the
    ASGI `root_path`.
    """

    host: str = "127.0.0.1"
    port: int = dataclasses.field(default_factory=lambda: _default_port())
    location: str = "HeadOnly"
    middlewares: Middlewares = dataclasses.field(default_factory=Middlewares)
    root_path: str = ""
    request_timeout_s: float | None = None
    max_body_bytes: int = 100 * 1024 * 1024
    keep_alive_timeout_s: float = 5

    def __post_init__(self) -> None:
        """Every field is checked here, so a wrong value fails where it was given (a dict
        through `of`, or `HTTPOptions(...)` itself), never later in a proxy."""
        _validate_host(self.host)
        _validate_port(self.port)
        if self.location not in _LOCATIONS:
            raise ValueError(f"http_options location must be 'HeadOnly', 'EveryNode' or 'NoServer', got "
                             f"{self.location!r}" + _did_you_mean(self.location, _LOCATIONS))
        object.__setattr__(self, "middlewares", _validate_middlewares(self.middlewares))
        object.__setattr__(self, "root_path", _validate_root_path(self.root_path))
        if self.request_timeout_s is not None:
            object.__setattr__(self, "request_timeout_s", _positive_seconds(
                "request_timeout_s", self.request_timeout_s, " or None for no limit (the default)"))
        object.__setattr__(self, "keep_alive_timeout_s",
                           _positive_seconds("keep_alive_timeout_s", self.keep_alive_timeout_s, " (default 5)"))
        _validate_max_body_bytes(self.max_body_bytes)

    @classmethod
    def of(cls, value: Any) -> "HTTPOptions":
        if value is None:
            return cls()
        if isinstance(value, HTTPOptions):
            return value
        if not isinstance(value, dict):
            raise TypeError(f"http_options must be a dict or serve.HTTPOptions, got {type(value).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise ValueError(f"unknown http_options {unknown}; valid options are {sorted(names)}")
        return cls(**value)  # __post_init__ validates every field
