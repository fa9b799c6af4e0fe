"""Observability options: `LoggingConfig` (Ray Serve's) and `TracingConfig`, strict pydantic
models like the other options (see `_model`).

`LoggingConfig` is accepted by `@serve.deployment(logging_config=...)`, `serve.run(...,
logging_config=...)`, `serve.start(logging_config=...)` and config files (top level: Serve's
own processes and the default of every deployment; application level; deployment level).
A deployment's own setting wins over its application's, which wins over Serve's.

`TracingConfig` turns OpenTelemetry tracing on (`serve.start(tracing_config=...)`, a config
file's `tracing_config:`, or `$ZEROSERVE_TRACING_EXPORTER`); it needs `zeroserve[tracing]`.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from ._model import Loc, Model, Must, invalid

__all__ = ["LEVELS", "LoggingConfig", "TracingConfig"]

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _level(value: Any) -> Any:
    """A level name (any case) or a logging level number, as its upper-case name."""
    if isinstance(value, str) and value.upper() in (*LEVELS, "WARN", "FATAL"):
        return logging.getLevelName(logging.getLevelName(value.upper()))
    if type(value) is int and logging.getLevelName(value) in LEVELS:
        return logging.getLevelName(value)
    raise invalid()


def _encoding(value: Any) -> Any:
    return value.upper() if isinstance(value, str) and value.upper() in ("TEXT", "JSON") else value


class LoggingConfig(Model):
    """How Serve's processes log (Ray Serve's `LoggingConfig`): the replicas of a deployment,
    or (at Serve level) the controller and the HTTP proxies.

    Each writes its log file `<logs_dir>/<component>.log` (`replica_<app>_<deployment>_<tag>`,
    `proxy_<node ip>`, `controller`): every record at or above `log_level` from any logger,
    with time, level, deployment, replica id and request id, as text or one JSON object per
    line, and one access-log line per request unless `enable_access_log` is false."""

    must: ClassVar[str] = "a dict such as {'encoding': 'JSON', 'log_level': 'INFO'}, or serve.LoggingConfig"
    where: ClassVar[Loc] = ("logging_config",)
    noun: ClassVar[str] = "logging_config"

    encoding: Annotated[Literal["TEXT", "JSON"], BeforeValidator(_encoding), Must("'TEXT' or 'JSON'")] = "TEXT"
    """TEXT: one line per record; JSON: one JSON object per line."""
    log_level: Annotated[str, BeforeValidator(_level), Field(json_schema_extra={"enum": list(LEVELS)}),
                         Must("a log level: 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL' (or its number)")] \
        = "INFO"
    """Records below this level are dropped."""
    logs_dir: Annotated[str | None, Field(min_length=1), Must("a directory path, or None for the node's log directory")] \
        = None
    """Where the log files go (default: the session's log directory on each node)."""
    enable_access_log: Annotated[bool, Must("true or false")] = True
    """One line per request (method, route, status, latency, request id)."""

    @classmethod
    def of(cls, value: Any) -> LoggingConfig | None:
        """`value` (a dict, a LoggingConfig, or None) as a LoggingConfig (None stays None)."""
        if value is None or isinstance(value, LoggingConfig):
            return value
        return cls.parse(value)

    @property
    def level_number(self) -> int:
        return int(logging.getLevelName(self.log_level))


_EXPORTER = r"^(none|console|otlp|file:.+|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"


class TracingConfig(Model):
    """OpenTelemetry tracing of requests (needs `pip install 'zeroserve[tracing]'`).

    `exporter`: where spans go: 'otlp' (an OTLP collector at `endpoint`, or
    $OTEL_EXPORTER_OTLP_ENDPOINT), 'console' (each process's stderr), 'file:/path' (JSON lines
    appended to that file by every process of the node), 'module:factory' (a function
    returning a `SpanExporter`), or 'none'."""

    must: ClassVar[str] = "a dict such as {'exporter': 'otlp', 'endpoint': 'http://collector:4318'}"
    where: ClassVar[Loc] = ("tracing_config",)
    noun: ClassVar[str] = "tracing_config"

    exporter: Annotated[str, Field(pattern=_EXPORTER),
                        Must("'otlp', 'console', 'file:/path/to/spans.jsonl', 'module:factory' or 'none'")] = "otlp"
    """Where spans go."""
    endpoint: Annotated[str | None, Field(min_length=1), Must("a URL such as 'http://collector:4318', or None")] = None
    """The OTLP collector (default: $OTEL_EXPORTER_OTLP_ENDPOINT, or the exporter's default)."""
    sampling_ratio: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), Must("a number in 0..1")] = 1.0
    """The share of new traces recorded (a client's sampled traceparent is followed)."""
    service_name: Annotated[str, Field(min_length=1), Must("a non-empty string")] = "zeroserve"
    """The `service.name` resource attribute of every span."""

    @classmethod
    def of(cls, value: Any) -> TracingConfig | None:
        if value is None or isinstance(value, TracingConfig):
            return value
        return cls.parse(value)

    @classmethod
    def from_env(cls) -> TracingConfig | None:
        """From `$ZEROSERVE_TRACING_EXPORTER` (and `$ZEROSERVE_TRACING_SAMPLING_RATIO`); None if unset."""
        exporter = os.environ.get("ZEROSERVE_TRACING_EXPORTER", "").strip()
        if not exporter or exporter == "none":
            return None
        if not re.match(_EXPORTER, exporter):
            raise ValueError(f"ZEROSERVE_TRACING_EXPORTER must be 'otlp', 'console', 'file:/path', 'module:factory' "
                             f"or 'none', got {exporter!r}")
        data: dict[str, Any] = {"exporter": exporter}
        ratio = os.environ.get("ZEROSERVE_TRACING_SAMPLING_RATIO")
        if ratio:
            data["sampling_ratio"] = float(ratio)
        return cls.parse(data)

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"
