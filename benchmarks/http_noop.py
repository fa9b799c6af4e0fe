"""HTTP no-op: zeroserve's proxy -> 1 replica against a raw uvicorn + Starlette process.

In one run, with wrk on loopback: the raw app answering directly, then a no-op
deployment through the proxy, each at 1 and 32 connections. Prints req/s, p50/p99
latency and the ratios. Targets (DESIGN.md §5): >= 25% of the raw req/s at 32
connections; <= 0.5 ms added p50 at 1 connection. Installs wrk (apt) if missing.

    python benchmarks/http_noop.py [--seconds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
        path = shutil.which("wrk")
    assert path is not None
    return path


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
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    p = {k: _ms(*re.match(r"([\d.]+)(\w+)", v).groups()) for k, v in lat.items()}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": p["50"], "p99_ms": p["99"], "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
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

    import serve

    @serve.deployment(max_ongoing_requests=100)
    class Noop:
        async def __call__(self, request):
            return "ok"

    port = free_port()
    serve.start(http_options={"port": port})
    try:
        serve.run(Noop.bind(), route_prefix="/noop")
        url = f"http://127.0.0.1:{port}/noop"
        wait_http(url)
        for c in (1, 32):
            results[f"zeroserve c={c}"] = run_wrk(wrk, url, c, args.seconds)
    finally:
        serve.shutdown()
    print(f"\n{'measurement':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
    for name, r in results.items():
        print(f"{name:<18} {r['rps']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['non_2xx']:>8}")
    share = results["zeroserve c=32"]["rps"] / results["raw c=32"]["rps"]
    added = results["zeroserve c=1"]["p50_ms"] - results["raw c=1"]["p50_ms"]
    print(f"\nzeroserve / raw req/s at 32 connections: {share:.0%} (target >= 25%: {'PASS' if share >= 0.25 else 'MISS'})")
    print(f"added p50 at 1 connection: {added:.2f} ms (target <= 0.5 ms: {'PASS' if added <= 0.5 else 'MISS'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "share_32": share, "added_p50_ms_1": added}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
