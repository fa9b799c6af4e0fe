"""What an open dashboard costs the head node at idle: CPU with the page closed vs open.

Run it with `python benchmarks/dashboard_cpu.py` (`--seconds N` per phase, `--replicas N`).

An embedded cluster (head + agent on 127.0.0.1) runs one Serve application with N idle
replicas. Three phases of `--seconds` each, measured as the CPU time (user + system) of
the head process and of all the node's zeroserve processes (head, agent, controller,
proxy, replicas; not this driver):

1. closed: nobody looks; the dashboard scrapes the node every 10 s for its history
   (`$ZEROSERVE_DASHBOARD_IDLE_SCRAPE_S`);
2. open: a poller does what the page does on a deployment's view — GET /api/deployment
   and /api/serve every 2 s — so the dashboard scrapes every 2 s;
3. open on the logs view: GET /api/logs/read of a replica's log every 2 s as well.

Prints each phase's CPU as a percentage of one core, and the increase of "open" over
"closed" as a share of the node's capacity (all cores). Target (issue 13): at most 2%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from typing import Any

import psutil

import actors
import serve
from actors.system import local_cluster


@serve.deployment
class Idle:
    def __call__(self, request: Any) -> str:
        return "ok"


def cluster_processes() -> tuple[psutil.Process, list[psutil.Process]]:
    pids = local_cluster().pids()
    head = psutil.Process(pids["head"])
    agent = psutil.Process(pids["agent"])
    return head, [head, agent, *agent.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(seconds: float, poll: Any | None) -> tuple[float, float]:
    """CPU % of one core of (head, whole node) over `seconds`, with `poll()` every 2 s."""
    head, procs = cluster_processes()
    stop = threading.Event()

    def poller() -> None:
        while not stop.wait(2.0):
            poll()

    thread = threading.Thread(target=poller, daemon=True) if poll else None
    if poll:
        poll()
    h0, n0, t0 = cpu_seconds([head]), cpu_seconds(procs), time.monotonic()
    if thread:
        thread.start()
    time.sleep(seconds)
    h1, n1, t1 = cpu_seconds([head]), cpu_seconds(procs), time.monotonic()
    stop.set()
    if thread:
        thread.join()
    return 100 * (h1 - h0) / (t1 - t0), 100 * (n1 - n0) / (t1 - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--replicas", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("ZEROSERVE_QUIET", "1")
    actors.init()
    url = local_cluster().dashboard_url
    if not url:
        print("the embedded cluster serves no dashboard ($ZEROSERVE_DASHBOARD_PORT=0?)", file=sys.stderr)
        return 1
    serve.run(Idle.options(num_replicas=args.replicas).bind(), name="bench", route_prefix="/idle")

    def get(path: str) -> Any:
        return json.loads(urllib.request.urlopen(url + path, timeout=10).read())

    def deployment_view() -> None:
        get("api/deployment?app=bench&name=Idle")
        get("api/serve")

    replica = get("api/deployment?app=bench&name=Idle")["replica_list"][0]
    logs = get(f"api/logs?target={urllib.request.quote(replica['replica_id'])}")["files"]
    tail = get(f"api/logs/tail?node={logs[0]['node_ip']}&file={logs[0]['name']}&lines=100")

    def logs_view() -> None:
        deployment_view()
        get(f"api/logs/read?node={tail['node']}&file={tail['file']}&offset={tail['offset']}&inode={tail['inode']}")

    time.sleep(35)  # let the start-up settle, and a page opened before (at start) count as closed again
    cores = psutil.cpu_count() or 1
    results = {}
    for phase, poll in (("closed", None), ("open (deployment view)", deployment_view), ("open (logs view)", logs_view)):
        results[phase] = measure(args.seconds, poll)
        head, node = results[phase]
        print(f"{phase:24s} head {head:5.2f}% of a core   node {node:5.2f}% of a core", flush=True)
        time.sleep(32)  # the dashboard goes back to idle scraping 30 s after the last call
    closed = results["closed"][1]
    for phase in ("open (deployment view)", "open (logs view)"):
        extra = results[phase][1] - closed
        print(f"{phase}: +{extra:.2f}% of a core on the node = +{extra / cores:.2f}% of its {cores} cores "
              f"(target <= 2%)")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {cores} cores during the run")
    serve.shutdown()
    actors.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
