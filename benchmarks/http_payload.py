"""HTTP payloads: 1 MB and 10 MB request bodies echoed back as the response body, through
zeroserve's proxy -> 1 replica against a raw uvicorn + Starlette process echoing the same
body, in one run (DESIGN.md §5 target: bytes/s >= 50% of raw).

wrk POSTs the body on 4 connections (`--connections`); bytes/s counts the body both ways
(request + response) per request.

    python benchmarks/http_payload.py [--seconds 5] [--rounds 2] [--sizes 1,10] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

from http_noop import ensure_wrk, free_port, wait_http

RAW_ECHO = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

async def echo(request):
    return Response(await request.body(), media_type="application/octet-stream")

app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"])])
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, http="httptools")
"""


def post(wrk: str, url: str, size: int, connections: int, seconds: int) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(f'wrk.method = "POST"\nwrk.body = string.rep("x", {size})\n'
                'wrk.headers["Content-Type"] = "application/octet-stream"\n')
    try:
        out = subprocess.run([wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "30s",
                              "--latency", "-s", f.name, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "MB_s": rps * size * 2 / 1e6, "non_2xx": int(errors.group(1)) if errors else 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--sizes", default="1,10", help="body sizes in MB, comma-separated")
    parser.add_argument("--json")
    args = parser.parse_args()
    import serve

    @serve.deployment(max_ongoing_requests=100)
    class Echo:
        async def __call__(self, request):
            return await request.body()

    wrk = ensure_wrk()
    raw_port, port = free_port(), free_port()
    raw = subprocess.Popen([sys.executable, "-c", RAW_ECHO, str(raw_port)])
    serve.start(http_options={"port": port})
    rows: list[dict] = []
    try:
        serve.run(Echo.bind(), route_prefix="/echo")
        urls = {"raw": f"http://127.0.0.1:{raw_port}/echo", "zeroserve": f"http://127.0.0.1:{port}/echo"}
        for url in urls.values():
            wait_http(url)
        for size_mb in (int(s) for s in args.sizes.split(",")):
            size = size_mb * 1024 * 1024
            for r in range(args.rounds):
                got = {name: post(wrk, url, size, args.connections, args.seconds) for name, url in urls.items()}
                ratio = got["zeroserve"]["MB_s"] / got["raw"]["MB_s"]
                rows.append({"size_mb": size_mb, "round": r + 1, **{k: v for k, v in got.items()}, "ratio": ratio})
                print(f"{size_mb:>3} MB round {r + 1}: raw {got['raw']['MB_s']:>7.0f} MB/s ({got['raw']['rps']:.1f} "
                      f"req/s)  zeroserve {got['zeroserve']['MB_s']:>7.0f} MB/s ({got['zeroserve']['rps']:.1f} req/s, "
                      f"{got['zeroserve']['non_2xx']} non-2xx)  ratio {ratio:.2f} "
                      f"(target >= 0.50: {'PASS' if ratio >= 0.5 else 'MISS'})", flush=True)
    finally:
        serve.shutdown()
        raw.terminate()
        raw.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
