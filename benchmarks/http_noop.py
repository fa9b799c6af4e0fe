"""HTTP no-op: zeroserve's proxy -> 1 replica against a raw uvicorn + Starlette process, and
the cost of observability.

In one run, with wrk on loopback: the raw app answering directly, then a no-op
deployment through the proxy, each at 1 and 32 connections. Prints req/s, p50/p99
latency and the ratios. Targets (DESIGN.md §5): >= 80% of the raw req/s at 32
connections; <= 0.15 ms added p50 at 1 connection. Installs wrk (apt) if missing.

Observability: zeroserve is measured with its defaults (serve_* metrics and access logs
on) and with both off (`$ZEROSERVE_SERVE_METRICS=0`, `logging_config={"enable_access_log":
False}`), alternately, `--rounds` times each (each in its own embedded cluster, a child
process of this one, which first measures the raw app as its yardstick: a shared machine's
speed drifts between runs); the median over rounds of (defaults / raw) / (off / raw) is the
defaults' throughput (target: cost at most 5%). Tracing disabled costs a few flag checks per request: measured here in
ns and as a share of the CPU time per request (target: at most 1%).

    python benchmarks/http_noop.py [--seconds 5] [--rounds 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ensure_wrk, free_port

os.environ.setdefault("ZEROSERVE_QUIET", "1")

RAW_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def noop(request):
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/noop", noop)])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, http="httptools")
"""


def wait_http(url: str, timeout: float = 30.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def routes(port: int) -> dict[str, str]:
    """The proxy's route table (GET /-/routes)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/routes", timeout=5) as r:
        return json.loads(r.read())


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, url: str, connections: int, seconds: float, *, body: str | None = None,
            warmup: bool = False) -> dict[str, float]:
    """wrk's requests/s, p50/p99 in ms and non-2xx count. `body`: POST it as JSON instead of
    GETs; `warmup`: a 1 s run first, not measured. (The other HTTP benchmarks use it too.)"""
    script: list[str] = []
    if body is not None:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(f'wrk.method = "POST"\nwrk.body = \'{body}\'\nwrk.headers["Content-Type"] = "application/json"\n')
        script = ["-s", f.name]
    try:
        if warmup:
            subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", "1s", *script, url], capture_output=True,
                           check=True)
        out = subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
                              *script, url], capture_output=True, text=True, check=True).stdout
    finally:
        if script:
            os.unlink(script[1])
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    p = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in lat.items()}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p["50"], "p99_ms": p["99"], "non_2xx": int(errors.group(1)) if errors else 0,
            "requests": total}


TRACING_CHECKS_PER_REQUEST = 4  # proxy observer, proxy forward, router send, replica (tracing off: flag reads)


def tracing_check_ns() -> float:
    """What one `if tracing.ENABLED:` costs with tracing off (ns), as the request path reads it."""
    from serve._data import tracing

    n = 2_000_000
    t0 = time.perf_counter()
    for _ in range(n):
        if tracing.ENABLED:
            pass
    loop = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n):
        pass
    empty = time.perf_counter() - t0
    return max(0.0, loop - empty) / n * 1e9


def serve_child(mode: str, seconds: int) -> dict[str, dict[str, float]]:
    """zeroserve at 1 and 32 connections, observability as `mode` says ("defaults" or "off");
    run in a child process whose environment says whether serve_* metrics count."""
    import serve

    @serve.deployment(max_ongoing_requests=100)
    class Noop:
        async def __call__(self, request):
            return "ok"

    wrk = ensure_wrk()
    out = {}
    port = free_port()  # the raw app first, as this child's yardstick (the machine's speed drifts)
    raw = subprocess.Popen([sys.executable, "-c", RAW_APP, str(port)])
    try:
        wait_http(f"http://127.0.0.1:{port}/noop")
        out["raw c=32"] = run_wrk(wrk, f"http://127.0.0.1:{port}/noop", 32, seconds, warmup=True)
    finally:
        raw.terminate()
        raw.wait()
    port = free_port()
    logging_config = {"enable_access_log": False} if mode == "off" else None
    serve.start(http_options={"port": port}, logging_config=logging_config)
    try:
        serve.run(Noop.bind(), route_prefix="/noop")
        url = f"http://127.0.0.1:{port}/noop"
        wait_http(url)
        pids = _serving_pids()
        for c in (1, 32):
            run_wrk(wrk, url, c, 1)  # warm-up, not measured
            before = _cpu_s(pids)
            out[f"c={c}"] = run_wrk(wrk, url, c, seconds)
            # the CPU time the proxy and the replica spent per request
            out[f"c={c}"]["cpu_us"] = (_cpu_s(pids) - before) / max(1, out[f"c={c}"]["requests"]) * 1e6
    finally:
        serve.shutdown()
    return out


def _serving_pids() -> list[int]:
    """The proxy's and the replicas' processes."""
    from actors.system import current_runtime

    rt = current_runtime()
    assert rt is not None
    infos = rt.run_threadsafe(rt.head.list_actors)
    return [i.pid for i in infos if i.pid and (i.name or "").startswith(("SERVE_PROXY", "SERVE_REPLICA"))]


def _cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


def run_serve_child(mode: str, seconds: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ, ZEROSERVE_SERVE_METRICS="0" if mode == "off" else "1")
    out = subprocess.run([sys.executable, __file__, "--child", mode, "--seconds", str(seconds)], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="runs of zeroserve with observability on and off, "
                                                              "alternately (default 2 each)")
    parser.add_argument("--json")
    parser.add_argument("--child", choices=["defaults", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(serve_child(args.child, args.seconds)), flush=True)
        return 0
    wrk = ensure_wrk()
    results: dict[str, dict[str, float]] = {}
    port = free_port()
    raw = subprocess.Popen([sys.executable, "-c", RAW_APP, str(port)])
    try:
        url = f"http://127.0.0.1:{port}/noop"
        wait_http(url)
        for c in (1, 32):
            results[f"raw c={c}"] = run_wrk(wrk, url, c, args.seconds)
    finally:
        raw.terminate()
        raw.wait()

    runs: dict[str, list[dict[str, dict[str, float]]]] = {"defaults": [], "off": []}
    for _ in range(args.rounds):
        for mode in ("defaults", "off"):
            runs[mode].append(run_serve_child(mode, args.seconds))
    for mode, label in (("defaults", "zeroserve"), ("off", "obs off")):
        for c in ("c=1", "c=32"):
            rows = [r[c] for r in runs[mode]]
            results[f"{label} {c}"] = {k: statistics.median([r[k] for r in rows]) for k in rows[0]}
    results["raw c=32 (children)"] = {k: statistics.median([r["raw c=32"][k] for m in runs for r in runs[m]])
                                      for k in runs["defaults"][0]["raw c=32"]}
    print(f"\n{'measurement':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'cpu us/req':>10}")
    for name, r in results.items():
        cpu = f"{r['cpu_us']:>10.0f}" if "cpu_us" in r else f"{'':>10}"
        print(f"{name:<18} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>8.0f} {cpu}")
    share = results["zeroserve c=32"]["rps"] / results["raw c=32"]["rps"]
    added = results["zeroserve c=1"]["p50_ms"] - results["raw c=1"]["p50_ms"]
    print(f"\nzeroserve / raw req/s at 32 connections: {share:.0%} (target >= 80%: {'PASS' if share >= 0.80 else 'MISS'})")
    print(f"added p50 at 1 connection: {added:.2f} ms (target <= 0.15 ms: {'PASS' if added <= 0.15 else 'MISS'})")
    # Each child's req/s over its own raw app's (measured just before): the machine's drift cancels.
    per_round = [(d["c=32"]["rps"] / d["raw c=32"]["rps"]) / (o["c=32"]["rps"] / o["raw c=32"]["rps"])
                 for d, o in zip(runs["defaults"], runs["off"], strict=True)]
    ratio = statistics.median(per_round)
    plain = results["zeroserve c=32"]["rps"] / results["obs off c=32"]["rps"]
    print(f"observability defaults (metrics + access logs) / off, req/s at 32 connections, each run over the raw "
          f"app measured just before it: {ratio:.3f} (cost {1 - ratio:+.1%}; target cost <= 5%: "
          f"{'PASS' if ratio >= 0.95 else 'MISS'}; per round: {', '.join(f'{x:.3f}' for x in per_round)}; "
          f"medians of plain req/s: {plain:.3f})")
    cpu_on, cpu_off = results["zeroserve c=32"]["cpu_us"], results["obs off c=32"]["cpu_us"]
    print(f"CPU time of the proxy + replica per request at 32 connections: {cpu_on:.0f} us with the defaults, "
          f"{cpu_off:.0f} us off: the defaults cost {cpu_on / cpu_off - 1:+.1%} (steadier than req/s on a shared "
          "machine: other load does not change it much)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _obs_hooks import hook_costs_us

    hooks = hook_costs_us()
    writer = 2 * hooks["access line, writer thread"]  # the proxy's line and the replica's
    per_request = hooks["proxy end of request"] + hooks["replica, HTTP request"] + hooks["router count"] + writer
    print(f"observability hooks per HTTP request, timed in-process (on minus off): {per_request:.2f} us (proxy "
          f"{hooks['proxy end of request']:.2f}, replica {hooks['replica, HTTP request']:.2f}, router "
          f"{hooks['router count']:.2f}, log writer threads {writer:.2f}) = {per_request / cpu_off:.1%} of the CPU "
          "time per request with them off")
    check_ns = tracing_check_ns()
    cpu_per_request_us = (os.cpu_count() or 1) / results["zeroserve c=32"]["rps"] * 1e6
    tracing_share = TRACING_CHECKS_PER_REQUEST * check_ns / 1000 / cpu_per_request_us
    print(f"tracing disabled: {TRACING_CHECKS_PER_REQUEST} flag checks x {check_ns:.0f} ns per request = "
          f"{tracing_share:.3%} of the CPU time per request ({cpu_per_request_us:.0f} us: {os.cpu_count()} cores / "
          f"req/s at 32 connections) (target <= 1%: {'PASS' if tracing_share <= 0.01 else 'MISS'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "share_32": share, "added_p50_ms_1": added, "obs_ratio_32": ratio,
                       "obs_ratio_per_round": per_round, "hooks_us": hooks, "tracing_disabled_share": tracing_share},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
