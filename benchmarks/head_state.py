"""The head's state store: how long a small KV write takes with a large state.

Starts a one-node cluster with `zeroserve start --head` (its head persists its state and
is restarted by its agent), connects a driver, times small `kv_put`s on an empty state,
fills the state with `--fill-mb` of 10 MB values, and times small `kv_put`s again. The
issue-16 drill saw 72-622 ms per write with a 100 MB state file, when every write
rewrote the whole file; writes must cost what changed, not what is stored.

    python benchmarks/head_state.py [--fill-mb 100] [--writes 50] [--root CHECKOUT] [--json PATH]

`--root` runs another checkout's code (e.g. main's, for a before/after comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fill-mb", type=int, default=100)
    parser.add_argument("--writes", type=int, default=50)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    root = str(Path(args.root).resolve())
    tmp = tempfile.mkdtemp(prefix="zs-bench-")
    os.environ["ZEROSERVE_TMPDIR"] = tmp
    os.environ["ZEROSERVE_QUIET"] = "1"
    sys.path.insert(0, root)
    import actors
    from actors.system import current_runtime

    def zeroserve(*words: str) -> str:
        proc = subprocess.run([sys.executable, "-c", "import sys; from cluster.cli import main; sys.exit(main())",
                               *words], capture_output=True, text=True, timeout=120, cwd=root)
        if proc.returncode != 0:
            raise SystemExit(f"zeroserve {' '.join(words)} failed:\n{proc.stdout}{proc.stderr}")
        return proc.stdout

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    zeroserve("start", "--head", "--port", str(port), "--num-cpus", "1")
    try:
        actors.init(address="auto")
        rt = current_runtime()
        assert rt is not None

        def put(key: str, value: bytes) -> float:
            t0 = time.perf_counter()
            rt.run_threadsafe(lambda: rt.head.kv_put(key, value, timeout=60))
            return time.perf_counter() - t0

        def small_writes() -> list[float]:
            return [put("bench/small", str(i).encode()) for i in range(args.writes)]

        empty = small_writes()
        t0 = time.perf_counter()
        for i in range(max(1, args.fill_mb // 10)):
            put(f"bench/big-{i}", os.urandom(10 * 2**20))
        fill_s = time.perf_counter() - t0
        full = small_writes()
        files = [p for p in Path(tmp).rglob("head-state*") if p.is_file()]
        state_mb = sum(p.stat().st_size for p in files) / 2**20
    finally:
        actors.shutdown()
        zeroserve("stop")

    def fig(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        return {"p50_ms": round(statistics.median(xs) * 1000, 2), "p99_ms": round(xs[int(len(xs) * 0.99) - 1] * 1000, 2),
                "max_ms": round(xs[-1] * 1000, 2)}

    out = {"root": root, "state_mb": round(state_mb, 1), "fill_s": round(fill_s, 1), "empty": fig(empty),
           "full": fig(full)}
    print(f"small kv_put with an empty state: {out['empty']}")
    print(f"small kv_put with {out['state_mb']} MB stored (filled in {out['fill_s']} s): {out['full']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
