"""`HTTPOptions`: where and how the HTTP proxies listen, validated once (a frozen strict
pydantic model; see `_model`), each default on its field here and nowhere else.

- `port` defaults to `$ZEROSERVE_HTTP_PORT` or 8000;
- `middlewares` travel as a `Middlewares` tuple that pickles its items with cloudpickle, so
  classes defined in a driver script reach the proxies (and the controller's checkpoint,
  plain pickle, holds them); they are refused in a config file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, ValidationError, ValidationInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import InitErrorDetails

from ._fields import FILE_CONTEXT
from ._model import Loc, Model, Must, invalid, wrong

__all__ = ["HTTPOptions", "Middlewares"]


def _default_port() -> int:
    """8000, or `$ZEROSERVE_HTTP_PORT` (so test runs and side-by-side setups do not collide)."""
    value = os.environ.get("ZEROSERVE_HTTP_PORT", "8000")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"ZEROSERVE_HTTP_PORT must be a port number, got {value!r}") from None


def _middlewares_from_blob(blob: bytes) -> Middlewares:
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

    def __deepcopy__(self, memo: dict) -> Middlewares:
        return self  # immutable as far as serve is concerned


_MIDDLEWARE_EXAMPLE = "[Middleware(CORSMiddleware, allow_origins=['*'])] (from starlette.middleware import Middleware)"


def _middlewares(value: Any, info: ValidationInfo) -> Middlewares:
    from starlette.middleware import Middleware

    if info.context and info.context.get(FILE_CONTEXT):
        raise wrong("not supported in a config file (middlewares are Python objects); pass them to "
                    "serve.start(http_options={'middlewares': [...]}) in Python")
    if value is None:
        return Middlewares()
    if not isinstance(value, (list, tuple)):
        raise wrong(f"must be a list of starlette Middleware objects such as {_MIDDLEWARE_EXAMPLE}; got "
                    f"{type(value).__name__} {value!r}", of_type=True)
    errors: list[InitErrorDetails] = []
    for i, item in enumerate(value):
        if not isinstance(item, Middleware):
            hint = (f"wrap it: Middleware({item.__name__}, ...)" if isinstance(item, type)
                    else "give Middleware(cls, *args, **kwargs) objects")
            errors.append({"type": wrong(f"is {item!r}, not a starlette Middleware; {hint}, e.g. {_MIDDLEWARE_EXAMPLE}",
                                         of_type=True), "loc": (i,), "input": item})
        elif not callable(item.cls):
            errors.append({"type": wrong(f"Middleware({item.cls!r}) does not wrap a middleware class or factory "
                                         "(called as cls(app, *args, **kwargs))", of_type=True),
                           "loc": (i,), "input": item})
    if errors:
        raise ValidationError.from_exception_data("middlewares", errors)
    import cloudpickle

    try:
        cloudpickle.dumps(tuple(value))
    except Exception as e:
        raise wrong(f"must pickle with cloudpickle to reach the HTTP proxy; pickling failed: {type(e).__name__}: "
                    f"{e}. Pass picklable arguments (no locks, sockets or open files) and create such resources "
                    "inside the middleware") from None
    return value if isinstance(value, Middlewares) else Middlewares(value)


def _root_path(value: str) -> str:
    if value == "":
        return value
    if not value.startswith("/"):
        raise invalid()
    if value.endswith("/"):
        suggestion = value.rstrip("/")
        raise wrong(f"must not end with '/': use {suggestion!r}" + (" (the empty string: no prefix)"
                                                                     if not suggestion else ""))
    if any(c in value for c in "{}?#") or "//" in value:
        raise wrong(f"{value!r} may not contain '{{', '}}', '?', '#' or '//'")
    return value


def _root_path_hint(value: Any) -> str:
    return f"; use {'/' + value.strip('/')!r}" if isinstance(value, str) and value.strip("/") else ""


def _port_hint(value: Any) -> str:
    return " (0, an ephemeral port, is not supported: the proxies must listen on a known port)" \
        if type(value) is int and value == 0 else ""


class HTTPOptions(Model):
    """Where and how the HTTP proxies listen (`serve.start(http_options=...)`, or a config
    file's `http_options:`).

    `middlewares`: Starlette `Middleware` objects wrapping each proxy's ASGI app (first is
    outermost). `root_path`: the prefix the proxies are mounted under (as behind a reverse
    proxy): requests must begin with it, routes match after it, and apps see it in the
    ASGI `root_path`.
    """

    must: ClassVar[str] = "a dict such as {'host': '127.0.0.1', 'port': 8000}, or serve.HTTPOptions"
    where: ClassVar[Loc] = ("http_options",)
    noun: ClassVar[str] = "http_options"

    host: Annotated[str, Field(pattern=r"\S"), Must("an IP address or host name such as '127.0.0.1' or '0.0.0.0' "
                                                    "(or 'node': each node's own IP)")] = "127.0.0.1"
    """The address each proxy binds; 'node' binds each node's own IP."""
    port: Annotated[int, Field(ge=1, le=65535), Must("an integer in 1..65535", hint=_port_hint)] = Field(
        default_factory=_default_port)
    """The port each proxy listens on (default 8000, or $ZEROSERVE_HTTP_PORT)."""
    location: Annotated[Literal["HeadOnly", "EveryNode", "NoServer"],
                        Must("'HeadOnly', 'EveryNode' or 'NoServer'")] = "HeadOnly"
    """Where proxies run: one on the head node, one on every node, or none."""
    middlewares: Annotated[Middlewares, PlainValidator(_middlewares), SkipJsonSchema()] = Middlewares()
    """Starlette Middleware objects wrapping each proxy's app, outermost first (Python only)."""
    root_path: Annotated[str, BeforeValidator(lambda v: "" if v is None else v), AfterValidator(_root_path),
                         Must("'' or a path starting with '/', such as '/serve'", hint=_root_path_hint)] = ""
    """The prefix the proxies are mounted under, as behind a reverse proxy ('': none)."""
    request_timeout_s: Annotated[float | None, Field(gt=0, allow_inf_nan=False), Must(
        "a positive number of seconds or None for no limit (the default)")] = None
    """How long a request may take before the proxy answers 504 (None: no limit)."""
    max_body_bytes: Annotated[int, Field(gt=0), Must("a positive integer number of bytes", show_default=True)] = \
        100 * 1024 * 1024
    """The largest request body accepted (larger: 413)."""
    keep_alive_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False),
                                    Must("a positive number of seconds", show_default=True)] = 5
    """How long an idle HTTP connection is kept open."""
    body_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False),
                              Must("a positive number of seconds", show_default=True)] = 120
    """How long a request body may take to arrive, from the end of its headers (longer:
    408 and the connection closed); see also `body_idle_timeout_s`."""
    body_idle_timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False),
                                   Must("a positive number of seconds", show_default=True)] = 30
    """The longest gap allowed between a request body's chunks (longer: 408 and the
    connection closed), however much of `body_timeout_s` is left."""
    max_connections: Annotated[int, Field(gt=0), Must("a positive integer", show_default=True)] = 10_000
    """Open connections per proxy; one more is answered 503 and closed at once (keep it
    below the process's file-descriptor limit)."""
    num_workers: Annotated[int | None, Field(ge=1, le=64), Must(
        "an integer in 1..64, or None for one per two of the node's cores (the default)")] = None
    """Proxy processes per node that serves HTTP, all listening on `port` (SO_REUSEPORT: the
    kernel spreads connections over them), each with its own routes and routers. None: half
    the cores (of the controller's machine, or the node's CPU resource if fewer), at least 1
    and at most 8: one on a 2-core machine."""

    @classmethod
    def of(cls, value: HTTPOptions | Mapping[str, Any] | None) -> HTTPOptions:
        """`serve.start`'s http_options (a dict, an HTTPOptions, or None for the defaults) as an HTTPOptions."""
        if value is None:
            return cls()
        if isinstance(value, HTTPOptions):
            return value
        if not isinstance(value, Mapping):
            raise TypeError(f"http_options must be a dict or serve.HTTPOptions, got {type(value).__name__}")
        return cls.parse(value)

    def given(self) -> dict[str, Any]:
        """The options set explicitly (as a config file's `http_options:`), without defaults."""
        return {k: v for k, v in self if k in self.model_fields_set}
