"""What Serve's observability costs on the request path, measured in-process (no sockets):
the proxy's end-of-request hook, the replica's, and a caller's counting, each with metrics
and the access log on (the defaults) and off; the log flush's share (counting a
queued request's record, and shipping it to the agent, as a worker does: into a pipe that a
thread drains); and the agent's (rendering and writing the shipped records' lines). Used by
`http_noop.py` and `handle_calls.py` beside their end-to-end on/off runs: on a shared
machine req/s swing with other load, these per-request microseconds much less."""

from __future__ import annotations

import contextlib
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from actors.system import LogRotation, ShippedLogReader, ship_logs_to

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


@contextlib.contextmanager
def _shipping() -> Iterator[list[bytes]]:
    """This process ships its log batches as a worker does, into a pipe a thread drains;
    yields what the thread read (whole when the block ends)."""
    r, w = os.pipe()
    received: list[bytes] = []

    def drain() -> None:
        while chunk := os.read(r, 1 << 20):
            received.append(chunk)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    ship_logs_to(w)
    try:
        yield received
    finally:
        from serve._data import logs

        logs.flush(wait_s=10)
        ship_logs_to(-1)
        os.close(w)
        thread.join()
        os.close(r)


def _agent_per_record_us(shipped: bytes, tmp: str) -> float:
    """The agent's CPU microseconds per shipped record: reading the frames, rendering and
    writing the lines (a replica's batches hold only its requests' records)."""
    best = float("inf")
    for _ in range(5):
        reader = ShippedLogReader(-1, LogRotation())
        t0 = time.thread_time()
        reader.receive(shipped)
        best = min(best, (time.thread_time() - t0) / max(reader.items, 1) * 1e6)
        reader.close()
        for path in Path(tmp).glob("*.log"):
            path.unlink()
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

    def proxy_hook(on: bool) -> Any:
        counting.ENABLED = on
        observer = _Observer("node", "127.0.0.250")
        observer.access = logs.configure(logs.Who.proxy("127.0.0.250"), on_cfg if on else off_cfg,
                                         tally=observer.tally, app_of=observer.app_of)
        observer.targets = {"Noop": DeploymentId("default", "Noop")}
        return lambda: observer.end(None, "GET", "/noop", "Noop", 200, time.perf_counter(), ctx[0], "/noop")

    def replica_hook(on: bool, method: str) -> Any:
        counting.ENABLED = on
        replica = ReplicaActor("Noop", f"b{int(on)}{method[:2]}", "default", pickle.dumps((_Noop, (), {})), None,
                               False, 100, on_cfg if on else off_cfg)
        args = (request,) if method == "__serve_http__" else (1,)
        return lambda: replica._observe(method, args, ctx, "ok", None, time.perf_counter())

    def writer_per_record(hook: Any) -> float:
        """The log flush's share of one request: counting its queued record and
        shipping it."""
        records = 500

        def batch() -> None:
            for _ in range(records):
                hook()
            logs.flush()

        queue_only = _per_call_us(hook)
        logs.flush()
        return _per_call_us(batch, n=20) / records - queue_only

    def router_count(metrics_on: bool, handle: bool = False) -> float:
        """The router's count of a request (`handle`: a handle call's, counted in two cells)."""
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
        return _per_call_us(lambda: router._count(ctx, handle))

    try:
        proxy_on = proxy_hook(True)
        out["proxy end of request"] = _per_call_us(proxy_on) - _per_call_us(proxy_hook(False))
        with _shipping():
            out["proxy, log flush"] = writer_per_record(proxy_on)
        # Off, a replica skips `_observe` altogether: its baseline is the loop alone.
        baseline = _per_call_us(lambda: time.perf_counter())
        replica_http = replica_hook(True, "__serve_http__")
        out["replica, HTTP request"] = _per_call_us(replica_http) - baseline
        with _shipping() as shipped:
            out["replica, log flush"] = writer_per_record(replica_http)
        out["agent, per shipped record"] = _agent_per_record_us(b"".join(shipped), tmp)
        out["replica, handle call"] = _per_call_us(replica_hook(True, "__call__")) - baseline
        out["router count"] = router_count(True) - router_count(False)
        out["handle call count"] = router_count(True, True) - router_count(False, True)
    finally:
        counting.ENABLED = True
        logs.flush()
    return out
