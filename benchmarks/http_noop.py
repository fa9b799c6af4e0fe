"""HTTP no-op: zeroserve's proxy -> 1 replica against a raw uvicorn + Starlette process, and
the cost of observability.

Three targets run side by side: the raw app, a no-op deployment on an embedded cluster with
the observability defaults (serve_* metrics and access logs on), and the same on a second
cluster with both off (`$ZEROSERVE_SERVE_METRICS=0`, `logging_config={"enable_access_log":
False}`). wrk measures each at 1 and 32 connections, `--rounds` times, the targets
interleaved in short runs: a shared machine's speed drifts over minutes, so each round's
targets see the same machine. Prints the medians (req/s, p50/p99 latency, and the CPU time per
request of the proxy, the replica and the agent, which writes their log lines) and the ratios. Targets (DESIGN.md §5): >= 80% of the raw
req/s at 32 connections; <= 0.15 ms added p50 at 1 connection; the defaults cost at most 5%
of the req/s at 32 connections (the median of the rounds' defaults/off ratios). Tracing
disabled costs a few flag checks per request: measured here in ns and as a share of the CPU
time per request (target: at most 1%). Installs wrk (apt) if missing.

    python benchmarks/http_noop.py [--seconds 3] [--rounds 6] [--json PATH]
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
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ModeChild, ensure_wrk, free_port

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


def serve_child(mode: str) -> None:
    """A no-op deployment on its own embedded cluster, observability as `mode` says
    ("defaults" or "off"; the environment says whether serve_* metrics count): prints its URL
    and the pids of its proxy and replica, then serves until its stdin closes."""
    import serve

    @serve.deployment(max_ongoing_requests=100)
    class Noop:
        async def __call__(self, request):
            return "ok"

    port = free_port()
    logging_config = {"enable_access_log": False} if mode == "off" else None
    serve.start(http_options={"port": port}, logging_config=logging_config)
    try:
        serve.run(Noop.bind(), route_prefix="/noop")
        url = f"http://127.0.0.1:{port}/noop"
        wait_http(url)
        print(json.dumps({"url": url, "pids": _serving_pids()}), flush=True)
        sys.stdin.read()
    finally:
        serve.shutdown()


def _serving_pids() -> list[int]:
    """The proxy's and the replicas' processes, and the node's agent (it writes their log lines)."""
    import psutil

    from actors.system import current_runtime

    rt = current_runtime()
    assert rt is not None
    infos = rt.run_threadsafe(rt.head.list_actors)
    agents = [p.pid for p in psutil.Process().children(recursive=True) if " agent" in " ".join(p.cmdline())]
    return [i.pid for i in infos if i.pid and (i.name or "").startswith(("SERVE_PROXY", "SERVE_REPLICA"))] + agents


def _cpu_s(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        t = psutil.Process(pid).cpu_times()
        total += t.user + t.system
    return total


class Target:
    """Something wrk measures: a URL, the processes whose CPU time it costs (none: not
    counted), and how to stop what serves it."""

    def __init__(self, url: str, pids: list[int], stop: Callable[[], object]) -> None:
        self.url, self.pids, self.stop = url, pids, stop

    def measure(self, wrk: str, connections: int, seconds: float) -> dict[str, float]:
        before = _cpu_s(self.pids)
        out = run_wrk(wrk, self.url, connections, seconds)
        if self.pids:  # the CPU time the proxy and the replica spent per request
            out["cpu_us"] = (_cpu_s(self.pids) - before) / max(1, out["requests"]) * 1e6
        return out


def start_raw() -> Target:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RAW_APP, str(port)])

    def stop() -> None:
        proc.terminate()
        proc.wait(timeout=60)

    target = Target(f"http://127.0.0.1:{port}/noop", [], stop)
    try:
        wait_http(target.url)
    except BaseException:
        stop()  # it never answered: not left running
        raise
    return target


def start_serving(mode: str) -> Target:
    child = ModeChild(__file__, mode)
    info = child.read()
    assert isinstance(info, dict)
    return Target(info["url"], info["pids"], child.close)


def interleaved(wrk: str, targets: dict[str, Target], connections: int, rounds: int,
                seconds: float) -> dict[str, list[dict[str, float]]]:
    """`rounds` runs of each target at `connections`, interleaved (each round in a rotated
    order): a shared machine's speed drifts over minutes, and the targets share the drift."""
    names = list(targets)
    for name in names:
        run_wrk(wrk, targets[name].url, connections, 1)  # warm-up, not measured
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            runs[name].append(targets[name].measure(wrk, connections, seconds))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="length of each wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=6, help="wrk runs of each target at each concurrency, "
                                                              "interleaved (default 6)")
    parser.add_argument("--json")
    parser.add_argument("--child", choices=["defaults", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(args.child)
        return 0
    wrk = ensure_wrk()
    targets: dict[str, Target] = {}
    try:
        targets["raw"] = start_raw()
        targets["zeroserve"] = start_serving("defaults")
        targets["obs off"] = start_serving("off")
        runs = {c: interleaved(wrk, targets, c, args.rounds, args.seconds) for c in (1, 32)}
    finally:
        for target in targets.values():
            target.stop()
    results: dict[str, dict[str, float]] = {}
    for name in targets:
        for c in (1, 32):
            rows = runs[c][name]
            results[f"{name} c={c}"] = {k: statistics.median([r[k] for r in rows]) for k in rows[0]}
    print(f"\n{'measurement':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'cpu us/req':>10}")
    for name, r in results.items():
        cpu = f"{r['cpu_us']:>10.0f}" if "cpu_us" in r else f"{'':>10}"
        print(f"{name:<18} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>8.0f} {cpu}")
    print(f"(medians of {args.rounds} runs of {args.seconds:g} s each, the three targets interleaved)")

    def per_round(name: str, base: str, c: int = 32, key: str = "rps") -> list[float]:
        return [a[key] / b[key] for a, b in zip(runs[c][name], runs[c][base], strict=True)]

    share = statistics.median(per_round("zeroserve", "raw"))
    added = results["zeroserve c=1"]["p50_ms"] - results["raw c=1"]["p50_ms"]
    print(f"\nzeroserve / raw req/s at 32 connections: {share:.0%} (target >= 80%: {'PASS' if share >= 0.80 else 'MISS'})")
    print(f"added p50 at 1 connection: {added:.2f} ms (target <= 0.15 ms: {'PASS' if added <= 0.15 else 'MISS'})")
    rounds = per_round("zeroserve", "obs off")
    ratio = statistics.median(rounds)
    print(f"observability defaults (metrics + access logs) / off, req/s at 32 connections, the median of the "
          f"{len(rounds)} rounds' ratios: {ratio:.3f} (cost {1 - ratio:+.1%}; target cost <= 5%: "
          f"{'PASS' if ratio >= 0.95 else 'MISS'}; per round: {', '.join(f'{x:.3f}' for x in rounds)})")
    cpu_on, cpu_off = results["zeroserve c=32"]["cpu_us"], results["obs off c=32"]["cpu_us"]
    print(f"CPU time of the proxy + replica + agent per request at 32 connections: {cpu_on:.0f} us with the defaults, "
          f"{cpu_off:.0f} us off: the defaults cost {cpu_on / cpu_off - 1:+.1%} (steadier than req/s on a shared "
          "machine: other load does not change it much)")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _obs_hooks import hook_costs_us

    hooks = hook_costs_us()
    writer = hooks["proxy, log flush"] + hooks["replica, log flush"]
    agent = 2 * hooks["agent, per shipped record"]  # the proxy's record and the replica's
    per_request = hooks["proxy end of request"] + hooks["replica, HTTP request"] + hooks["router count"] + writer + agent
    print(f"observability hooks per HTTP request, timed in-process (on minus off): {per_request:.2f} us (proxy "
          f"{hooks['proxy end of request']:.2f}, replica {hooks['replica, HTTP request']:.2f}, router "
          f"{hooks['router count']:.2f}, log flushes {writer:.2f}, the agent writing the lines {agent:.2f}) = "
          f"{per_request / cpu_off:.1%} of the CPU time per request with them off")
    check_ns = tracing_check_ns()
    cpu_per_request_us = (os.cpu_count() or 1) / results["zeroserve c=32"]["rps"] * 1e6
    tracing_share = TRACING_CHECKS_PER_REQUEST * check_ns / 1000 / cpu_per_request_us
    print(f"tracing disabled: {TRACING_CHECKS_PER_REQUEST} flag checks x {check_ns:.0f} ns per request = "
          f"{tracing_share:.3%} of the CPU time per request ({cpu_per_request_us:.0f} us: {os.cpu_count()} cores / "
          f"req/s at 32 connections) (target <= 1%: {'PASS' if tracing_share <= 0.01 else 'MISS'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "share_32": share, "added_p50_ms_1": added, "obs_ratio_32": ratio,
                       "obs_ratio_per_round": rounds, "hooks_us": hooks, "tracing_disabled_share": tracing_share},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
