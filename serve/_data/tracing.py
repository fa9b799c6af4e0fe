"""OpenTelemetry tracing of requests, when configured (`pip install 'zeroserve[tracing]'`).

Spans, all in one trace per HTTP request (or per handle call made outside a request):
- the proxy's `HTTP <method> <route>` (SERVER), its parent the client's W3C `traceparent`
  when it sent a valid one;
- each handle call's `handle <deployment>.<method>` (CLIENT), a child of the span current
  where `.remote()` was called (in a replica: the request's);
- the router's `route <deployment>` (INTERNAL): queueing and the choice of a replica
  (`serve.replica`, `serve.queued`), a child of the call it routes;
- the replica's `replica <deployment>.<method>` (SERVER), a child of the call (the proxy's
  span, or the handle span), current while the user's code runs, so its own spans and
  handle calls nest under it.
The caller's span travels to the next process as the `traceparent` of the request context
(see `context.RequestContext`).

Off (the default): `ENABLED` is False, call sites test it and do nothing else, and nothing
imports OpenTelemetry. `configure(config)` turns it on in this process (from
`TracingConfig`, or `$ZEROSERVE_TRACING_EXPORTER`); every Serve process does so at start
with the config the controller hands it.
"""

from __future__ import annotations

import atexit
import importlib
import os
import threading
from typing import Any

from .._obs_config import TracingConfig

__all__ = ["ENABLED", "client_parent", "configure", "current_traceparent", "disable", "end", "remote_parent", "start",
           "start_current", "traceparent_of"]

ENABLED = False
_tracer: Any = None
_config: TracingConfig | None = None
_lock = threading.Lock()


def configure(config: TracingConfig | None = None) -> bool:
    """Turn tracing on as `config` says (None: as `$ZEROSERVE_TRACING_EXPORTER` says, if set);
    True if it is on. Once on, a process keeps its first configuration."""
    global ENABLED, _tracer, _config
    if config is None:
        config = TracingConfig.from_env()
    if config is None or not config.enabled:
        return ENABLED
    with _lock:
        if ENABLED:
            return True
        try:
            from opentelemetry import trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as e:
            raise RuntimeError("tracing needs OpenTelemetry's SDK: pip install 'zeroserve[tracing]' "
                               f"(importing it failed: {e})") from None
        resource = Resource.create({"service.name": config.service_name, "process.pid": os.getpid()})
        provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(config.sampling_ratio)), resource=resource)
        exporter, batched = _exporter(config)
        provider.add_span_processor(BatchSpanProcessor(exporter) if batched else SimpleSpanProcessor(exporter))
        atexit.register(provider.shutdown)
        try:
            trace.set_tracer_provider(provider)  # user code's spans go through it too (if none was set)
        except Exception:
            pass
        _tracer = provider.get_tracer("zeroserve")
        _config = config
        ENABLED = True
    return True


def disable() -> None:
    """Stop making spans in this process (spans already made are still exported)."""
    global ENABLED
    with _lock:
        ENABLED = False
        if _tracer is not None:
            _provider_flush()


def _provider_flush() -> None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush()


def _exporter(config: TracingConfig) -> tuple[Any, bool]:
    """The span exporter `config.exporter` names, and whether to batch its exports."""
    name = config.exporter
    if name == "console" or name.startswith("file:"):
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        def one_line(span: Any) -> str:
            return str(span.to_json(indent=None)) + "\n"

        if name.startswith("file:"):
            out = open(name[5:], "a", buffering=1, encoding="utf-8")
            return ConsoleSpanExporter(out=out, formatter=one_line), False
        return ConsoleSpanExporter(formatter=one_line), False
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as e:
            raise RuntimeError("the 'otlp' exporter needs opentelemetry-exporter-otlp-proto-http: pip install "
                               f"'zeroserve[tracing]' ({e})") from None
        endpoint = config.endpoint
        if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        return (OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()), True
    module, _, attr = name.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"tracing_config.exporter {name!r}: cannot import it: {e}") from None
    return factory(), False


# -- spans (only called when ENABLED) -------------------------------------------------------------
def remote_parent(traceparent: str) -> Any:
    """The OpenTelemetry context whose parent is the span `traceparent` names (None: no parent)."""
    if not traceparent:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def start(name: str, kind: str = "INTERNAL", parent: Any = None, traceparent: str = "",
          attributes: dict[str, Any] | None = None) -> Any:
    """A started span: its parent is `parent` (a context), else the span `traceparent` names,
    else the current span."""
    from opentelemetry.trace import SpanKind

    if parent is None and traceparent:
        parent = remote_parent(traceparent)
    return _tracer.start_span(name, context=parent, kind=getattr(SpanKind, kind), attributes=attributes)


def start_current(name: str, kind: str = "SERVER", parent: Any = None, traceparent: str = "",
                  attributes: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """A started span made current in this context; `end(span, token)` ends it and restores."""
    from opentelemetry import context, trace

    span = start(name, kind, parent, traceparent, attributes)
    return span, context.attach(trace.set_span_in_context(span))


def end(span: Any, token: Any = None, error: BaseException | None = None, status: int | None = None) -> None:
    from opentelemetry.trace import Status, StatusCode

    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    elif status is not None:
        span.set_attribute("http.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
    span.end()
    if token is not None:
        from opentelemetry import context

        try:
            context.detach(token)
        except Exception:  # ended in another context than it started (a cancelled task)
            pass


def traceparent_of(span: Any) -> str:
    """The W3C `traceparent` of `span`, to carry to another process."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return ""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_traceparent() -> str:
    """The W3C `traceparent` of the current span ("" if none)."""
    from opentelemetry import trace

    return traceparent_of(trace.get_current_span())


def client_parent(headers: Any) -> Any:
    """The context of a client's W3C trace headers (`traceparent`, `tracestate`), if any."""
    carrier = {}
    for name, value in headers:
        if name in (b"traceparent", b"tracestate"):
            carrier[name.decode()] = value.decode("latin-1")
    if "traceparent" not in carrier:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(carrier)
