"""What a replica records of each request: its `serve_deployment_*` metrics and access-log line.

`RequestObservation` is a mixin of `ReplicaActor` (which owns the state it reads): `_observe`
runs once per request, after it, when metrics, the access log or tracing is on. With the
access log on it only queues the request's record: the log's flush counts a batch of them
(`_tally_batch`) and has their lines written (see `logs.LogFile`); with it off, `_tally`
counts the request. The metric cells of a route are made at its first request and reused.
Also the replica's `serve_replica_processing_queries` (requests in flight, read at scrape
time).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from proxy import HTTPResponse, HTTPStreamStart, WebSocketStart

from ..messages import HTTP_METHOD, WEBSOCKET_METHOD
from .context import APP, RID, ROUTE, Ctx
from .logs import AccessLog, latencies_by
from .serve_metrics import replica_metrics

__all__ = ["RequestObservation"]


class RequestObservation:
    """The observing side of `ReplicaActor`."""

    if TYPE_CHECKING:  # set by ReplicaActor
        _deployment: str
        _id: str
        _app: str
        _cells: dict[str, tuple[Any, Any, Any]] | None
        _access: AccessLog | None
        _ongoing: int

    def _observe(self, method: str, args: tuple, ctx: Ctx, result: Any, error: BaseException | None,
                 started: float) -> int | str:
        """Count one request and write its access-log line (with the access log on, both in
        the log's flush: see `logs.AccessLog`); returns its status."""
        latency_ms = (time.perf_counter() - started) * 1000.0
        access = self._access
        if error is None and method != HTTP_METHOD and method != WEBSOCKET_METHOD:  # a handle call that returned
            if access is not None:
                access.append((time.time(), "CALL", method, "OK", latency_ms, ctx[RID], ctx[ROUTE], ctx[APP], False,
                               True))
            elif self._cells is not None:
                self._tally(method, "OK", latency_ms, ctx[ROUTE], False)
            return "OK"
        failed = error is not None and isinstance(error, Exception)
        status: int | str
        if method == HTTP_METHOD:
            status = 500 if failed else ("CANCELLED" if error is not None else _status_of(result))
        elif method == WEBSOCKET_METHOD and type(result) is WebSocketStart:  # refused here (not an ingress)
            status = 403
        else:
            status = "ERROR" if failed else ("CANCELLED" if error is not None else "OK")
        if access is not None:
            if method == HTTP_METHOD:
                verb, what = args[0].method, ctx[ROUTE] or args[0].root_path or "/"
            elif method == WEBSOCKET_METHOD:
                verb, what = "WEBSOCKET", ctx[ROUTE] or args[0].root_path or "/"
            else:
                verb, what = "CALL", method
            access.append((time.time(), verb, what, status, latency_ms, ctx[RID], ctx[ROUTE], ctx[APP], failed, True))
        elif self._cells is not None:
            self._tally(method, status, latency_ms, ctx[ROUTE], failed)
        return status

    def _tally(self, method: str, status: int | str, latency_ms: float, route: str, failed: bool) -> None:
        """Count one request to `route` (`failed`: it raised)."""
        route_cells = self._route_cells(route)
        route_cells[0].value += 1
        route_cells[2].observe(latency_ms)
        if failed:
            route_cells[1].value += 1

    def _tally_batch(self, queued: list) -> None:
        """Count the requests' records among a batch of queued access-log items, by route
        and whether they failed (the record's `extra`)."""
        for (route, failed), latencies in latencies_by(queued, "route", "extra").items():
            route_cells = self._route_cells(route)
            route_cells[0].value += len(latencies)
            route_cells[2].observe_all(latencies)
            if failed:
                route_cells[1].value += len(latencies)

    def _route_cells(self, route: str) -> tuple[Any, Any, Any]:
        """The (requests, errors, latency) cells of `route`, made at its first request."""
        cells = self._cells
        assert cells is not None
        route_cells = cells.get(route)
        if route_cells is None:
            metrics, labels = replica_metrics(), (self._deployment, self._id, route, self._app)
            route_cells = cells[route] = (metrics.requests.cell(*labels), metrics.errors.cell(*labels),
                                          metrics.latency.cell(*labels))
        return route_cells

    def metric_rows(self, name: str) -> list[tuple[tuple[str, ...], float]]:
        """serve_replica_processing_queries, read at scrape time."""
        return [((self._deployment, self._id, self._app), float(self._ongoing))]

def _status_of(result: Any) -> int:
    """The HTTP status of what the replica answered an HTTP request with."""
    if isinstance(result, (HTTPResponse, HTTPStreamStart)):
        return result.status
    return 200
