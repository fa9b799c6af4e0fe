"""What Serve's observability costs on the request path, measured in-process (no sockets):
the proxy's end-of-request hook, the replica's, and a caller's counting, each with metrics
and the access log on (the defaults) and off. Used by `http_noop.py` and `handle_calls.py`
beside their end-to-end on/off runs: on a shared machine req/s swing with other load, these
per-request microseconds much less."""

from __future__ import annotations

import pickle
import tempfile
import time
from typing import Any

N = 10_000


class _Noop:
    def __call__(self, *args: Any) -> str:
        return "ok"


def _per_call_us(fn: Any, n: int = N, reps: int = 7) -> float:
    """CPU microseconds per call (this thread's CPU time, the best of `reps`: other processes
    taking the CPU meanwhile do not count)."""
    for _ in range(1000):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - t0) / n * 1e6)
    return best


def hook_costs_us() -> dict[str, float]:
    """Microseconds per request of each hook, on (defaults) minus off."""
    from proxy import HTTPRequest
    from serve import LoggingConfig
    from serve._data import counting, logs
    from serve._data.http_proxy import _Observer
    from serve._data.replica import ReplicaActor
    from serve._data.router import Router
    from serve.messages import DeploymentId

    tmp = tempfile.mkdtemp(prefix="zs-obs-bench-")
    on_cfg, off_cfg = LoggingConfig(logs_dir=tmp), LoggingConfig(logs_dir=tmp, enable_access_log=False)
    ctx = ("p0123456789ab00000001", "/noop", "default", "", "")
    request = HTTPRequest("GET", "/", "/noop", b"", ((b"host", b"x"),), b"")
    out: dict[str, float] = {}

    def proxy_end(access_on: bool, metrics_on: bool) -> float:
        access = logs.configure(logs.Who.proxy("127.0.0.250"), on_cfg if access_on else off_cfg)
        counting.ENABLED = metrics_on
        observer = _Observer("node", "127.0.0.250", access)
        observer.targets = {"Noop": DeploymentId("default", "Noop")}
        return _per_call_us(lambda: observer.end(None, "GET", "/noop", "Noop", 200, time.perf_counter(), ctx[0],
                                                 "/noop"))

    def replica_observe(access_on: bool, metrics_on: bool, method: str) -> float:
        counting.ENABLED = metrics_on
        replica = ReplicaActor("Noop", f"b{int(access_on)}{int(metrics_on)}{method[:2]}", "default",
                               pickle.dumps((_Noop, (), {})), None, False, 100, on_cfg if access_on else off_cfg)
        args = (request,) if method == "__serve_http__" else (1,)
        return _per_call_us(lambda: replica._observe(method, args, ctx, "ok", None, time.perf_counter()))

    def router_count(metrics_on: bool) -> float:
        import asyncio

        async def make() -> Router:
            class _Listen:
                def remote(self, *a: Any) -> Any:
                    return asyncio.get_running_loop().create_future()

            controller = type("C", (), {"listen": _Listen(), "record_load": _Listen()})()
            counting.ENABLED = metrics_on
            r = Router(DeploymentId("default", "Noop"), controller, handle_id="h", actor_id="")
            r.close()
            return r

        router = asyncio.run(make())
        return _per_call_us(lambda: router._count(ctx))

    def writer_per_line() -> float:
        """The log writer thread's share: formatting and writing one queued access line."""
        access = logs.configure(logs.Who.proxy("127.0.0.251"), on_cfg)
        assert access is not None
        lines = 500

        def batch() -> None:
            for _ in range(lines):
                access.write("GET", "/noop", 200, 1.234, ctx[0], "/noop", "default")
            logs.flush()

        queue_only = _per_call_us(lambda: access.write("GET", "/noop", 200, 1.234, ctx[0], "/noop", "default"))
        logs.flush()
        return _per_call_us(batch, n=20) / lines - queue_only

    try:
        out["access line, writer thread"] = writer_per_line()
        out["proxy end of request"] = proxy_end(True, True) - proxy_end(False, False)
        # Off, a replica skips `_observe` altogether: its baseline is the loop alone.
        baseline = _per_call_us(lambda: time.perf_counter())
        out["replica, HTTP request"] = replica_observe(True, True, "__serve_http__") - baseline
        out["replica, handle call"] = replica_observe(True, True, "__call__") - baseline
        out["router count"] = router_count(True) - router_count(False)
    finally:
        counting.ENABLED = True
        logs.flush()
    return out
