"""zeroserve against Ray Serve, the same workloads in one run.

Ray Serve is installed from the package registry with pip into its own virtual environment
(`~/.cache/zeroserve-bench/ray-venv` by default, `--ray-venv`; never the project's), once.
Then one child process per framework, each on a fresh local single-node instance, deploys
the same no-op deployment (`max_ongoing_requests=1000`) and measures:

- HTTP no-op through the framework's proxy, with wrk on loopback: req/s at 32 connections
  and p50 latency at 1 connection;
- handle calls from a sync driver, sequential (`handle.remote(x).result()`): calls/s;
- handle calls from an async driver, 1,000 in flight (`asyncio.gather` in windows of
  1,000): calls/s.

Prints both frameworks' figures and zeroserve's ratio over Ray Serve for each (the README's
table comes from this output).

    python benchmarks/vs_ray.py [--seconds 5] [--ray-venv DIR] [--ray-spec 'ray[serve]'] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ensure_wrk

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VENV = Path.home() / ".cache" / "zeroserve-bench" / "ray-venv"

CHILD = r'''
import asyncio, json, re, socket, subprocess, sys, time
fw, wrk, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
if fw == "ray":
    import ray
    from ray import serve
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
else:
    sys.path.insert(0, sys.argv[4])
    import actors
    import serve
    actors.init()

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
serve.start(http_options={"host": "127.0.0.1", "port": port})


@serve.deployment(max_ongoing_requests=1000)
class Noop:
    async def __call__(self, x=None):
        return "ok"


handle = serve.run(Noop.bind(), name="noop", route_prefix="/noop")
url = f"http://127.0.0.1:{port}/noop"


def ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(connections, secs):
    subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", "1s", url], capture_output=True, check=True)
    out = subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(secs))}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": ms(*p50.groups()), "non_2xx": int(bad.group(1)) if bad else 0}


out = {"http_c32": run_wrk(32, seconds), "http_c1": run_wrk(1, seconds)}
for _ in range(200):  # warm-up
    handle.remote(1).result()
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < seconds:
    for _ in range(100):
        handle.remote(1).result()
    n += 100
out["handle_sequential_per_s"] = n / (time.perf_counter() - t0)


async def concurrent():
    await asyncio.gather(*[handle.remote(i) for i in range(1000)])  # warm-up
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        await asyncio.gather(*[handle.remote(i) for i in range(1000)])
        calls += 1000
    return calls / (time.perf_counter() - t0)


out["handle_concurrent_per_s"] = asyncio.run(concurrent())
serve.shutdown()
if fw == "ray":
    ray.shutdown()
else:
    actors.shutdown()
print("RESULT " + json.dumps(out), flush=True)
'''


def ensure_ray(venv: Path, spec: str) -> tuple[str, str]:
    """The Ray venv's python and Ray's version, installing it first if missing."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import ray, ray.serve; print(ray.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0:
            return str(python), found.stdout.strip()
    print(f"installing {spec} into {venv} (its own virtualenv, once) ...", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", spec], check=True)
    return str(python), subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


def run_child(python: str, fw: str, wrk: str, seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"vs-ray-{fw}-") as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD)
        env = {**os.environ, "ZEROSERVE_QUIET": "1", "ZEROSERVE_TMPDIR": tmp, "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONPATH": ""}
        proc = subprocess.run([python, str(script), fw, wrk, str(seconds), str(ROOT)], capture_output=True,
                              text=True, env=env, timeout=900, cwd=tmp)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise SystemExit(f"the {fw} run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ray-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--ray-spec", default="ray[serve]")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    wrk = ensure_wrk()
    ray_python, ray_version = ensure_ray(args.ray_venv, args.ray_spec)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    zs = run_child(sys.executable, "zeroserve", wrk, args.seconds)
    ray = run_child(ray_python, "ray", wrk, args.seconds)
    rows = [
        ("HTTP no-op, 32 connections (req/s)", zs["http_c32"]["rps"], ray["http_c32"]["rps"], True),
        ("HTTP no-op, 1 connection, p50 (ms)", zs["http_c1"]["p50_ms"], ray["http_c1"]["p50_ms"], False),
        ("handle calls, sync driver, sequential (calls/s)", zs["handle_sequential_per_s"],
         ray["handle_sequential_per_s"], True),
        ("handle calls, async driver, 1,000 in flight (calls/s)", zs["handle_concurrent_per_s"],
         ray["handle_concurrent_per_s"], True),
    ]
    load = os.getloadavg()
    print(f"zeroserve vs Ray Serve {ray_version} — {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {started}, load {load[0]:.1f}; "
          f"command: python benchmarks/vs_ray.py --seconds {args.seconds:g}")
    print()
    print("| workload | zeroserve | Ray Serve | zeroserve / Ray |")
    print("|---|---:|---:|---:|")
    for name, z, r, higher_better in rows:
        ratio = (z / r) if higher_better else (r / z)
        fmt = "{:,.2f}" if "ms" in name else "{:,.0f}"
        print(f"| {name} | {fmt.format(z)} | {fmt.format(r)} | {ratio:.1f}x{'' if higher_better else ' faster'} |")
    bad = zs["http_c32"]["non_2xx"] + ray["http_c32"]["non_2xx"]
    if bad:
        print(f"warning: {bad} non-2xx HTTP responses")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"ray_version": ray_version, "when": started, "load": load, "zeroserve": zs, "ray": ray},
                      f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
