"""Cluster scale: how fast 100 actors spread over 4 nodes are all answering.

Starts a real 4-node cluster with `zeroserve start` (head on 127.0.0.1, agents on
127.0.0.2-4), connects a driver, creates N actors (default 100) and times until every one
has answered a call; then reports actors/s and the placement. Target (issue 3): 100
actors ready in <= 10 s on 2 cores.

    python benchmarks/cluster_scale.py [--actors 100] [--nodes 4] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter

from _common import ROOT, free_port, zeroserve

TARGET_S = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--actors", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    os.environ["ZEROSERVE_TMPDIR"] = tempfile.mkdtemp(prefix="zs-bench-")
    os.environ["ZEROSERVE_QUIET"] = "1"
    sys.path.insert(0, ROOT)
    import actors

    port = free_port()
    t0 = time.perf_counter()
    zeroserve("start", "--head", "--port", str(port))
    for i in range(2, args.nodes + 1):
        zeroserve("start", "--address", f"127.0.0.1:{port}", "--node-ip", f"127.0.0.{i}")
    cluster_s = time.perf_counter() - t0
    try:
        actors.init(address="auto")

        @actors.remote
        class Replica:
            def ready(self) -> str:
                return socket.gethostname()

        t0 = time.perf_counter()
        handles = [Replica.remote() for _ in range(args.actors)]
        created_s = time.perf_counter() - t0
        actors.get([h.ready.remote() for h in handles], timeout=120)
        ready_s = time.perf_counter() - t0
        infos = {n["node_id"]: n["ip"] for n in actors.nodes()}
        from actors.system import current_runtime

        rt = current_runtime()
        placed = Counter(infos[rt.run_threadsafe(lambda h=h: rt.head.get_actor_info(h.actor_id)).node_id.hex]
                         for h in handles)
        actors.shutdown()
    finally:
        zeroserve("stop")
    figures = {"nodes": args.nodes, "actors": args.actors, "cluster_start_s": round(cluster_s, 2),
               "create_calls_s": round(created_s, 3), "all_ready_s": round(ready_s, 2),
               "actors_per_s": round(args.actors / ready_s, 1), "placement": dict(sorted(placed.items())),
               "target_s": TARGET_S, "pass": ready_s <= TARGET_S * args.actors / 100}
    print(f"cluster of {args.nodes} nodes started in {cluster_s:.2f} s")
    print(f"{args.actors} actors: .remote() calls returned in {created_s:.3f} s, all answered in {ready_s:.2f} s "
          f"({figures['actors_per_s']:.0f} actors/s)")
    print("placement:", ", ".join(f"{ip}: {n}" for ip, n in figures["placement"].items()))
    print(f"target: 100 actors ready in <= {TARGET_S:.0f} s -> {'PASS' if figures['pass'] else 'MISS'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
