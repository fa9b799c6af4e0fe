"""Serve's own metrics: Ray Serve's names without the `ray_` prefix, with its labels.

Each role makes its families on first use, so a process shows the families of what it
runs (a proxy its HTTP ones, a replica its deployment's, every caller its router's and
handle's). Counters are exported with Prometheus' `_total` suffix, as Ray's are.

    proxy       serve_num_http_requests_total{route, method, application, status_code}
                serve_num_http_error_requests_total{route, error_code, method, application}  (status >= 400)
                serve_num_deployment_http_error_requests_total{deployment, error_code, method, route, application}
                serve_http_request_latency_ms{method, route, application, status_code}  (histogram)
                serve_num_ongoing_http_requests{node_id, node_ip_address}
    caller      serve_handle_request_counter_total{handle, deployment, route, application}
                serve_num_router_requests_total{deployment, route, application, handle, actor_id}
                serve_deployment_queued_queries{deployment, application, handle, actor_id}
    replica     serve_deployment_request_counter_total{deployment, replica, route, application}
                serve_deployment_error_counter_total{deployment, replica, route, application}
                serve_deployment_processing_latency_ms{deployment, replica, route, application}  (histogram)
                serve_replica_processing_queries{deployment, replica, application}
                serve_deployment_replica_starts_total{deployment, replica, application}
    multiplex   serve_multiplexed_model_load_total{deployment, replica, application}
                serve_multiplexed_model_unload_total{deployment, replica, application}
                serve_multiplexed_model_load_latency_ms{deployment, replica, application}  (histogram)
                serve_multiplexed_model_requests_total{deployment, replica, application, model_id}
                serve_num_multiplexed_models{deployment, replica, application}
    controller  serve_deployment_replica_healthy{deployment, replica, application}
                serve_deployment_target_replicas{deployment, application}
                serve_deployment_running_replicas{deployment, application}
                serve_autoscaling_decisions_total{deployment, application, direction}

`route` is the route prefix an HTTP request matched (a handle call carries its caller's
request's, "" outside one); `replica` is the replica id ("Deployment#tag"); `handle` names
a process's caller of one deployment (stable for the life of the process).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

from .counting import Counter, CounterFunc, GaugeFunc, Histogram, family

__all__ = ["caller_metrics", "controller_metrics", "multiplex_metrics", "proxy_metrics", "replica_metrics"]


@functools.cache
def proxy_metrics() -> SimpleNamespace:
    return SimpleNamespace(
        requests=family(Counter, "serve_num_http_requests", "The number of HTTP requests processed.",
                        ("route", "method", "application", "status_code")),
        errors=family(Counter, "serve_num_http_error_requests",
                      "The number of HTTP responses with an error status (>= 400).",
                      ("route", "error_code", "method", "application")),
        deployment_errors=family(Counter, "serve_num_deployment_http_error_requests",
                                 "The number of HTTP responses with an error status (>= 400), by deployment.",
                                 ("deployment", "error_code", "method", "route", "application")),
        latency=family(Histogram, "serve_http_request_latency_ms",
                       "The end-to-end latency of HTTP requests (measured from the Serve HTTP proxy).",
                       ("method", "route", "application", "status_code")),
        ongoing=family(GaugeFunc, "serve_num_ongoing_http_requests", "The number of ongoing requests in this "
                       "HTTP proxy.", ("node_id", "node_ip_address")),
    )


@functools.cache
def caller_metrics() -> SimpleNamespace:
    return SimpleNamespace(
        handle_requests=family(Counter, "serve_handle_request_counter",
                               "The number of handle.remote() calls that have been made on this handle.",
                               ("handle", "deployment", "route", "application")),
        router_requests=family(Counter, "serve_num_router_requests", "The number of requests processed by the router.",
                               ("deployment", "route", "application", "handle", "actor_id")),
        queued=family(GaugeFunc, "serve_deployment_queued_queries",
                      "The current number of queries to this deployment waiting to be assigned to a replica.",
                      ("deployment", "application", "handle", "actor_id")),
    )


@functools.cache
def replica_metrics() -> SimpleNamespace:
    labels = ("deployment", "replica", "route", "application")
    return SimpleNamespace(
        requests=family(Counter, "serve_deployment_request_counter",
                        "The number of queries that have been processed in this replica.", labels),
        errors=family(Counter, "serve_deployment_error_counter",
                      "The number of exceptions that have occurred in this replica.", labels),
        latency=family(Histogram, "serve_deployment_processing_latency_ms",
                       "The latency for queries to be processed.", labels),
        processing=family(GaugeFunc, "serve_replica_processing_queries", "The current number of queries being "
                          "processed.", ("deployment", "replica", "application")),
        starts=family(Counter, "serve_deployment_replica_starts",
                      "The number of times this replica has been restarted due to failure.",
                      ("deployment", "replica", "application")),
    )


@functools.cache
def multiplex_metrics() -> SimpleNamespace:
    """A replica's model cache (`@serve.multiplexed`); `model_id` is bounded by the models
    the replica has held (its requests name them)."""
    labels = ("deployment", "replica", "application")
    return SimpleNamespace(
        loads=family(Counter, "serve_multiplexed_model_load", "The number of models loaded.", labels),
        unloads=family(Counter, "serve_multiplexed_model_unload", "The number of models evicted (unloaded).", labels),
        load_latency=family(Histogram, "serve_multiplexed_model_load_latency_ms", "The time a model took to load.",
                            labels),
        requests=family(Counter, "serve_multiplexed_model_requests", "The number of requests for a model.",
                        (*labels, "model_id")),
        held=family(GaugeFunc, "serve_num_multiplexed_models", "The number of models this replica holds.", labels),
    )


@functools.cache
def controller_metrics() -> SimpleNamespace:
    return SimpleNamespace(
        healthy=family(GaugeFunc, "serve_deployment_replica_healthy",
                       "Whether the replica is healthy (1) or not (0, failed its health check or died).",
                       ("deployment", "replica", "application")),
        target=family(GaugeFunc, "serve_deployment_target_replicas",
                      "The number of replicas the controller aims at (the autoscaler's decision, or num_replicas).",
                      ("deployment", "application")),
        running=family(GaugeFunc, "serve_deployment_running_replicas", "The number of replicas running now.",
                       ("deployment", "application")),
        decisions=family(CounterFunc, "serve_autoscaling_decisions",
                         "The number of times the autoscaler changed a deployment's target (direction: up/down).",
                         ("deployment", "application", "direction")),
    )
