"""Handle calls carrying large numpy arrays: do they travel without copies?

A replica receives a 100 MB float64 array (`--mb`) and answers with (a) a small summary or
(b) the array itself; the replica's peak RSS growth over the call (VmHWM, reset through
/proc/self/clear_refs before each call) is compared with the payload. Arguments and
results go as pickle protocol 5 out-of-band buffers, each its own ZeroMQ frame, sent and
received with copy=False; the only copy a receiver cannot avoid is the message ZeroMQ
reads off the socket (and, with CURVE, decrypts). Target (DESIGN.md §5, issue 17):
peak RSS growth <= 1.2x the payload. Also prints the throughput (MB/s) of each way.

    python benchmarks/payloads.py [--mb 100] [--rounds 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import numpy as np

import actors
import serve

TARGET = 1.2


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


@serve.deployment
class Sink:
    def reset_peak(self) -> int:
        """Reset this process's peak RSS to its current RSS; returns that (bytes)."""
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kb("VmRSS") * 1024

    def peak(self) -> int:
        return _status_kb("VmHWM") * 1024

    def summary(self, a: np.ndarray) -> tuple[int, float]:
        return a.nbytes, float(a[:: max(1, a.size // 1000)].sum())

    def echo(self, a: np.ndarray) -> np.ndarray:
        return a


def measure(handle: serve.DeploymentHandle, method: str, a: np.ndarray) -> tuple[float, float]:
    """(peak RSS growth of the replica / payload, seconds) for one call."""
    base = handle.reset_peak.remote().result()
    t0 = time.perf_counter()
    out = getattr(handle, method).remote(a).result()
    dt = time.perf_counter() - t0
    if method == "echo":
        assert isinstance(out, np.ndarray) and out.shape == a.shape
    growth = handle.peak.remote().result() - base
    return growth / a.nbytes, dt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="array size in MB")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    a = np.random.default_rng(0).random(args.mb * (1 << 20) // 8)
    rows = []
    actors.init()
    try:
        serve.start(http_options={"location": "NoServer"})
        h = serve.run(Sink.bind(), name="payloads", route_prefix=None)
        h.summary.remote(a[:1000]).result()
        print(f"{'call':<44} {'peak RSS growth / payload':>26} {'MB/s':>8}  verdict")
        for method, label in (("summary", "100 MB array in, summary out"), ("echo", "100 MB array in, same array out")):
            label = label.replace("100", str(args.mb))
            results = [measure(h, method, a) for _ in range(args.rounds)]
            ratio = sorted(r for r, _ in results)[len(results) // 2]
            mbs = (2 if method == "echo" else 1) * a.nbytes / (1 << 20) / min(dt for _, dt in results)
            verdict = "PASS" if ratio <= TARGET else "MISS"
            print(f"{label:<44} {ratio:>26.2f} {mbs:>8,.0f}  {verdict}  (rounds: "
                  f"{', '.join(f'{r:.2f}' for r, _ in results)})")
            rows.append({"call": label, "rss_growth_over_payload": ratio, "mb_per_s": mbs, "target": TARGET})
    finally:
        serve.shutdown()
        actors.shutdown()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
