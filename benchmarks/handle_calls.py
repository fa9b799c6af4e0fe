"""Handle calls to a no-op deployment, against the runtime's own actor calls in the same run,
and the cost of observability.

Measures, on an embedded cluster:
- sequential calls from a sync driver (`handle.remote(x).result()`), 1 replica;
- 1,000 concurrent calls from an async driver (asyncio.gather), 1 and 4 replicas;
- the same 1,000-in-flight load issued from inside a deployment (model composition:
  the caller runs on the runtime's own loop, no thread hop);
- baselines: a no-op actor method called the same ways, and a raw blocking pyzmq
  DEALER/ROUTER echo between two processes with CURVE on (`_raw_zmq.py`), measured in the
  same child right before the handle calls.
Targets (DESIGN.md §5, issue 17): a sequential sync-driver handle call takes <= 1.5x the
raw round trip (printed per run as raw rate / handle rate); >= 40,000 calls/s with 1,000
in flight.

Observability: each measurement runs with Serve's defaults (serve_* metrics and access
logs on) and with both off (`$ZEROSERVE_SERVE_METRICS=0`, `logging_config={"enable_access_log":
False}`), alternately, `--rounds` times each, every run in its own embedded cluster (a child
process of this one, whose actor-call rates are its yardstick: a shared machine's speed
drifts between runs); the median over rounds of (handle / actor call) with the defaults over
the same without is the defaults' throughput (target: cost at most 5%).
The observability hooks are also timed in-process (microseconds per call, on minus off).

    python benchmarks/handle_calls.py [--quick] [--rounds 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import actors
import serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _raw_zmq import raw_round_trip_rate

SEQ_RATIO_TARGET, PAR_TARGET = 1.5, 40_000
RAW = "raw pyzmq DEALER/ROUTER echo, CURVE, 2 processes"


@serve.deployment(max_ongoing_requests=1000)
class Noop:
    async def __call__(self, x: int) -> int:
        return x


@serve.deployment
class Fanout:
    def __init__(self, target: serve.DeploymentHandle) -> None:
        self.target = target

    async def run(self, total: int, window: int) -> float:
        t0 = time.perf_counter()
        for start in range(0, total, window):
            await asyncio.gather(*[self.target.remote(i) for i in range(start, min(start + window, total))])
        return total / (time.perf_counter() - t0)


@actors.remote
class NoopActor:
    async def noop(self, x: int) -> int:
        return x


def seq_rate(call, n: int) -> float:
    for _ in range(min(200, n)):
        call()
    t0 = time.perf_counter()
    for _ in range(n):
        call()
    return n / (time.perf_counter() - t0)


def par_rate(make, total: int, window: int = 1000) -> float:
    async def main() -> float:
        await asyncio.gather(*[make() for _ in range(min(window, 200))])
        t0 = time.perf_counter()
        for start in range(0, total, window):
            await asyncio.gather(*[make() for _ in range(min(window, total - start))])
        return total / (time.perf_counter() - t0)

    return asyncio.run(main())


def measure(quick: bool, mode: str) -> list[tuple[str, float, float | None]]:
    """Every measurement on a fresh embedded cluster; observability as `mode` says."""
    n_seq, n_par = (300, 3000) if quick else (3000, 20000)
    actors.init()
    rows: list[tuple[str, float, float | None]] = []
    try:
        base = NoopActor.remote()
        actors.get(base.noop.remote(0))
        rows.append(("actor call, sync driver, sequential", seq_rate(lambda: actors.get(base.noop.remote(1)), n_seq), None))
        rows.append(("actor call, async driver, 1,000 in flight", par_rate(lambda: base.noop.remote(1), n_par), None))
        logging_config = {"enable_access_log": False} if mode == "off" else None
        serve.start(http_options={"location": "NoServer"}, logging_config=logging_config)  # handles only
        one = serve.run(Noop.bind(), name="one", route_prefix=None)
        rows.append((RAW, raw_round_trip_rate(n_seq), None))
        rows.append(("handle, sync driver, sequential, 1 replica", seq_rate(lambda: one.remote(1).result(), n_seq),
                     None))
        rows.append(("handle, async driver, 1,000 in flight, 1 replica", par_rate(lambda: one.remote(1), n_par),
                     PAR_TARGET))
        four = serve.run(Noop.options(name="Noop4", num_replicas=4).bind(), name="four", route_prefix=None)
        rows.append(("handle, async driver, 1,000 in flight, 4 replicas", par_rate(lambda: four.remote(1), n_par),
                     PAR_TARGET))
        fan = serve.run(Fanout.bind(Noop.options(name="NoopInner").bind()), name="fan", route_prefix=None)
        fan.run.remote(1000, 1000).result()
        rows.append(("handle, inside a deployment, 1,000 in flight", fan.run.remote(n_par, 1000).result(), PAR_TARGET))
    finally:
        serve.shutdown()
        actors.shutdown()
    return rows


def run_child(mode: str, quick: bool) -> list[tuple[str, float, float | None]]:
    import subprocess

    env = dict(os.environ, ZEROSERVE_SERVE_METRICS="0" if mode == "off" else "1")
    out = subprocess.run([sys.executable, __file__, "--child", mode, *(["--quick"] if quick else [])], env=env,
                         capture_output=True, text=True, check=True).stdout
    return [tuple(r) for r in json.loads(out.strip().splitlines()[-1])]  # type: ignore[misc]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--rounds", type=int, default=2, help="runs with observability on and off, alternately")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", choices=["defaults", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.quick, args.child)), flush=True)
        return 0
    runs: dict[str, list[list[tuple[str, float, float | None]]]] = {"defaults": [], "off": []}
    for _ in range(args.rounds):
        for mode in ("defaults", "off"):
            runs[mode].append(run_child(mode, args.quick))
    labels = [r[0] for r in runs["defaults"][0]]
    targets = {r[0]: r[2] for r in runs["defaults"][0]}
    rate = {mode: {label: statistics.median([dict((r[0], r[1]) for r in run)[label] for run in runs[mode]])
                   for label in labels} for mode in runs}
    print(f"\n{'measurement':<52} {'calls/s':>10}  {'target':>8}  verdict  {'obs off':>10}  defaults/off")
    for label in labels:
        on, off, target = rate["defaults"][label], rate["off"][label], targets[label]
        verdict = "" if target is None else ("PASS" if on >= target else "MISS")
        ratio = f"{on / off:.3f}" if label.startswith("handle") else ""
        print(f"{label:<52} {on:>10,.0f}  {target or '':>8}  {verdict:<7}  {off:>10,.0f}  {ratio}")
    base_seq, base_par = rate["defaults"][labels[0]], rate["defaults"][labels[1]]
    seq_label, par_label = labels[3], labels[4]
    print(f"\nhandle / actor-call ratio: sequential {rate['defaults'][seq_label] / base_seq:.2f}, "
          f"1,000 in flight {rate['defaults'][par_label] / base_par:.2f}")
    # The raw round trip over the handle call, each run against its own raw baseline.
    seq_ratios = [dict((r[0], r[1]) for r in run)[RAW] / dict((r[0], r[1]) for r in run)[seq_label]
                  for mode in runs for run in runs[mode]]
    seq_vs_raw = statistics.median(seq_ratios)
    print(f"sequential handle call / raw pyzmq round trip (time per call): {seq_vs_raw:.2f}x (target <= "
          f"{SEQ_RATIO_TARGET}x: {'PASS' if seq_vs_raw <= SEQ_RATIO_TARGET else 'MISS'}; per run: "
          f"{', '.join(f'{r:.2f}' for r in seq_ratios)})")

    # Each run's handle rates over its own actor-call rate (no observability in those): the drift cancels.
    def normalized(run: list[tuple[str, float, float | None]]) -> dict[str, float]:
        rates = {r[0]: r[1] for r in run}
        return {"seq": rates[seq_label] / rates[labels[0]], "par": rates[par_label] / rates[labels[1]]}

    pairs = [(normalized(d), normalized(o)) for d, o in zip(runs["defaults"], runs["off"], strict=True)]
    seq_ratio = statistics.median([d["seq"] / o["seq"] for d, o in pairs])
    par_ratio = statistics.median([d["par"] / o["par"] for d, o in pairs])
    cost = 1 - min(seq_ratio, par_ratio)
    print(f"observability defaults (metrics + access logs) / off, each run over its own actor calls: sequential "
          f"{seq_ratio:.3f}, 1,000 in flight {par_ratio:.3f} (worst cost {cost:+.1%}; target <= 5%: "
          f"{'PASS' if cost <= 0.05 else 'MISS'}; per round: "
          f"{', '.join(f'{d[k] / o[k]:.3f}' for d, o in pairs for k in ('seq', 'par'))})")
    from _obs_hooks import hook_costs_us

    hooks = hook_costs_us()
    seq_us = 1e6 / rate["off"][seq_label]
    writer = hooks["replica, writer thread"]  # a handle call's record counts like an HTTP request's
    per_call = hooks["router count"] + hooks["replica, handle call"] + writer
    print(f"observability hooks per handle call, timed in-process: {per_call:.2f} us (router "
          f"{hooks['router count']:.2f}, replica {hooks['replica, handle call']:.2f}, log writer thread "
          f"{writer:.2f}) = {per_call / seq_us:.1%} of a sequential call's {seq_us:.0f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{"measurement": label, "calls_per_s": round(rate["defaults"][label]),
                                 "obs_off_calls_per_s": round(rate["off"][label]), "target": targets[label]}
                                for label in labels], "obs_cost": cost, "hooks_us": hooks,
                       "seq_over_raw": seq_vs_raw, "seq_over_raw_runs": seq_ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
