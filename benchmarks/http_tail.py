"""HTTP tail latency: p99 against p50 at 80% of the maximum throughput (DESIGN.md §5
target: p99 <= 4 x p50), for zeroserve's proxy -> 1 no-op replica and, as the yardstick, a
raw uvicorn + Starlette process measured the same way in the same run.

Maximum: wrk with 32 connections, as fast as they go. Then a paced load at 80% of it: wrk
connections that each wait PACE_MS between a response and their next request (wrk's
`delay()`), as many as that rate needs (rate = connections / (pace + latency)), adjusted
until the measured rate is within 5% of the goal. (This is closed-loop with think time, not
an open-loop generator: a stall is not charged for the requests it kept from being sent.)

    python benchmarks/http_tail.py [--seconds 5] [--rounds 3] [--num-workers N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

from http_noop import RAW_APP, ensure_wrk, free_port, run_wrk, wait_http

PACE_MS = 10
LOAD = 0.8


def paced(wrk: str, url: str, rate: float, seconds: int) -> dict[str, float]:
    """wrk at about `rate` req/s: connections that each pause PACE_MS between requests."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f"function delay()\n  return {PACE_MS}\nend\n")
    try:
        latency_ms = 1.0
        result: dict[str, float] = {}
        for _ in range(4):
            connections = max(1, round(rate * (PACE_MS + latency_ms) / 1000))
            out = subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s",
                                  f.name, url], capture_output=True, text=True, check=True).stdout
            result = _parse(out)
            result["connections"] = connections
            if abs(result["rps"] / rate - 1) <= 0.05:
                break
            # the latency those connections saw, from the rate they reached
            latency_ms = max(0.05, connections / max(result["rps"], 1.0) * 1000 - PACE_MS)
        return result
    finally:
        os.unlink(f.name)


def _parse(out: str) -> dict[str, float]:
    import re

    from http_noop import _ms

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = dict(re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+\w+)", out, re.M))
    p = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in lat.items()}
    return {"rps": rps, "p50_ms": p["50"], "p90_ms": p["90"], "p99_ms": p["99"]}


def measure(wrk: str, url: str, seconds: int) -> dict[str, float]:
    top = run_wrk(wrk, url, 32, seconds, warmup=True)
    at = paced(wrk, url, LOAD * top["rps"], seconds)
    return {"max_rps": top["rps"], **at, "ratio": at["p99_ms"] / at["p50_ms"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=None, help="http_options.num_workers (default: its default)")
    parser.add_argument("--json")
    args = parser.parse_args()
    import serve

    @serve.deployment(max_ongoing_requests=100)
    class Noop:
        async def __call__(self, request):
            return "ok"

    wrk = ensure_wrk()
    raw_port, port = free_port(), free_port()
    raw = subprocess.Popen([sys.executable, "-c", RAW_APP, str(raw_port)])
    options: dict = {"port": port}
    if args.num_workers is not None:
        options["num_workers"] = args.num_workers
    serve.start(http_options=options)
    rows: list[tuple[str, dict[str, float]]] = []
    try:
        serve.run(Noop.bind(), route_prefix="/noop")
        urls = {"raw": f"http://127.0.0.1:{raw_port}/noop", "zeroserve": f"http://127.0.0.1:{port}/noop"}
        for url in urls.values():
            wait_http(url)
        for r in range(args.rounds):
            for name, url in urls.items():
                rows.append((name, measure(wrk, url, args.seconds)))
                m = rows[-1][1]
                print(f"round {r + 1} {name:<9} max {m['max_rps']:>7,.0f} req/s; at {m['rps']:>7,.0f} req/s "
                      f"({m['rps'] / m['max_rps']:.0%}, {m['connections']:.0f} paced connections): p50 "
                      f"{m['p50_ms']:.2f} ms p90 {m['p90_ms']:.2f} ms p99 {m['p99_ms']:.2f} ms  p99/p50 "
                      f"{m['ratio']:.2f}", flush=True)
    finally:
        serve.shutdown()
        raw.terminate()
        raw.wait()
    summary = {}
    for name in ("raw", "zeroserve"):
        ratios = sorted(m["ratio"] for n, m in rows if n == name)
        summary[name] = ratios[len(ratios) // 2]
    verdict = "PASS" if summary["zeroserve"] <= 4 else "MISS"
    print(f"\nmedian p99/p50 at {LOAD:.0%} of max: zeroserve {summary['zeroserve']:.2f} (target <= 4: {verdict}); "
          f"raw uvicorn {summary['raw']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "median_ratio": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
