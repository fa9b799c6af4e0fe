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

Observability: two child processes, each with its own embedded cluster, one with Serve's
defaults (serve_* metrics and access logs on) and one with both off
(`$ZEROSERVE_SERVE_METRICS=0`, `logging_config={"enable_access_log": False}`), make every
measurement `--rounds` times, the two one after the other (a shared machine's speed drifts
over minutes: each pair sees the same machine), then the four handle measurements
`--obs-rounds` times more. Each pair gives a ratio, defaults / off; their geometric mean is
the defaults' throughput, for each handle measurement, with its standard error (target: cost
at most 5% in the worst of them; a plain mean of ratios this noisy reads about 1 point high).
One pair's ratio varies by 8-15% on a 2-core machine, so the median of a few rounds was off
by 3 points either way; 20 more rounds bring the standard error to about 1 point. That
error counts only the pairs' scatter, and whole runs of the same code differed by up to 4
points: whatever favours one cluster of a pair for its whole life (where its processes
landed, what else the machine ran meanwhile) does not average out over its rounds. So the
observability rounds run in blocks of `--fresh-every` (10), each block on a freshly started
pair of clusters, which one starts first alternating. `--aa` is the control: both clusters
run the defaults, and the printed "defaults/off" is the estimate's own error.
The observability hooks are also timed in-process (microseconds per call, on minus off).

    python benchmarks/handle_calls.py [--quick] [--rounds 4] [--obs-rounds 20] [--fresh-every 10] [--aa]
                                      [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ZEROSERVE_QUIET", "1")

import actors
import serve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ModeChild
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


class Measurements:
    """Every measurement, on this process's embedded cluster; observability as `mode` says."""

    def __init__(self, quick: bool, mode: str) -> None:
        self.n_seq, self.n_par = (300, 3000) if quick else (3000, 20000)
        actors.init()
        self.base = NoopActor.remote()
        actors.get(self.base.noop.remote(0))
        logging_config = {"enable_access_log": False} if mode == "off" else None
        serve.start(http_options={"location": "NoServer"}, logging_config=logging_config)  # handles only
        self.one = serve.run(Noop.bind(), name="one", route_prefix=None)
        self.four = serve.run(Noop.options(name="Noop4", num_replicas=4).bind(), name="four", route_prefix=None)
        self.fan = serve.run(Fanout.bind(Noop.options(name="NoopInner").bind()), name="fan", route_prefix=None)
        self.fan.run.remote(1000, 1000).result()

    def rows(self) -> list[tuple[str, float | None]]:
        """(label, target) of each measurement, in order."""
        return [("actor call, sync driver, sequential", None), ("actor call, async driver, 1,000 in flight", None),
                (RAW, None), ("handle, sync driver, sequential, 1 replica", None),
                ("handle, async driver, 1,000 in flight, 1 replica", PAR_TARGET),
                ("handle, async driver, 1,000 in flight, 4 replicas", PAR_TARGET),
                ("handle, inside a deployment, 1,000 in flight", PAR_TARGET)]

    def measure(self, i: int) -> float:
        """The calls/s of measurement `i` (of `rows()`)."""
        n_seq, n_par = self.n_seq, self.n_par
        if i == 0:
            return seq_rate(lambda: actors.get(self.base.noop.remote(1)), n_seq)
        if i == 1:
            return par_rate(lambda: self.base.noop.remote(1), n_par)
        if i == 2:
            return raw_round_trip_rate(n_seq)
        if i == 3:
            return seq_rate(lambda: self.one.remote(1).result(), n_seq)
        if i == 4:
            return par_rate(lambda: self.one.remote(1), n_par)
        if i == 5:
            return par_rate(lambda: self.four.remote(1), n_par)
        return self.fan.run.remote(n_par, 1000).result()

    def close(self) -> None:
        serve.shutdown()
        actors.shutdown()


def serve_child(mode: str, quick: bool) -> None:
    """Measure on request: reads a measurement's index per line on stdin, answers its rate."""
    m = Measurements(quick, mode)
    try:
        print(json.dumps(m.rows()), flush=True)
        for line in sys.stdin:
            print(json.dumps(m.measure(int(line))), flush=True)
    finally:
        m.close()


class Child(ModeChild):
    """A child process measuring on its own cluster, observability as `mode` says."""

    def __init__(self, mode: str, quick: bool) -> None:
        super().__init__(__file__, mode, *(["--quick"] if quick else []))
        self.rows = [tuple(r) for r in self.read()]

    def measure(self, i: int) -> float:
        return float(self.ask(str(i)))


def start_pair(quick: bool, aa: bool, first: str) -> dict[str, Child]:
    """The two clusters, "defaults" and "off" (with `aa`, the defaults too), `first` started
    first."""
    modes = {"defaults": "defaults", "off": "defaults" if aa else "off"}
    children: dict[str, Child] = {}
    try:
        for key in (first, *(k for k in modes if k != first)):
            children[key] = Child(modes[key], quick)
    except BaseException:
        close_all(children)
        raise
    return children


def close_all(children: dict[str, Child]) -> None:
    """Stop the children (and their clusters); one already stopped is left as it is."""
    for child in children.values():
        child.close()


def in_rounds(children: dict[str, Child], rows: list[tuple], rounds: int,
              which: Callable[[str], bool]) -> dict[str, dict[str, list[float]]]:
    """`rounds` runs of the measurements whose label is `which`, each on both clusters in turn
    (which goes first alternates): each mode's rates by label."""
    runs: dict[str, dict[str, list[float]]] = {mode: {str(r[0]): [] for r in rows} for mode in children}
    for r in range(rounds):
        for i, (label, _) in enumerate(rows):
            if which(str(label)):
                for mode in (("defaults", "off") if r % 2 == 0 else ("off", "defaults")):
                    runs[mode][str(label)].append(children[mode].measure(i))
    return runs


def mean_and_error(ratios: list[float]) -> tuple[float, float]:
    """The geometric mean of `ratios` and its standard error (0 for a single ratio): the mean
    of their logarithms, which noise in the denominators does not bias upward as it does a
    plain mean of ratios (by about their variance: 1-2 points at +-12%)."""
    logs = [math.log(r) for r in ratios]
    mean = math.exp(statistics.fmean(logs))
    return mean, (mean * statistics.stdev(logs) / len(logs) ** 0.5 if len(logs) > 1 else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls (a smoke run)")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each measurement with observability on and "
                                                              "off, one after the other (default 4)")
    parser.add_argument("--obs-rounds", type=int, help="more runs of the four handle measurements only, on and "
                                                        "off, for the cost of observability (default 20; 1 with "
                                                        "--quick)")
    parser.add_argument("--fresh-every", type=int, default=10, help="start a fresh pair of clusters every this many "
                                                                     "observability rounds (default 10)")
    parser.add_argument("--aa", action="store_true", help="an A/A control: the second cluster runs the defaults too")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--child", choices=["defaults", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fresh_every < 1:
        parser.error(f"--fresh-every must be 1 or more (rounds per pair of clusters), not {args.fresh_every}")
    if args.child:
        serve_child(args.child, args.quick)
        return 0
    children: dict[str, Child] = {}
    try:
        children = start_pair(args.quick, args.aa, "defaults")
        rows = children["defaults"].rows
        runs = in_rounds(children, rows, args.rounds, lambda label: True)
        obs_rounds = args.obs_rounds if args.obs_rounds is not None else (1 if args.quick else 20)
        obs_runs: dict[str, dict[str, list[float]]] = {mode: {str(r[0]): [] for r in rows} for mode in children}
        for block, start in enumerate(range(0, obs_rounds, args.fresh_every)):
            if block > 0:  # a fresh pair of clusters, the other one started first
                close_all(children)
                children = start_pair(args.quick, args.aa, "off" if block % 2 else "defaults")
            part = in_rounds(children, rows, min(args.fresh_every, obs_rounds - start),
                             lambda label: label.startswith("handle, "))
            for mode, by_label in part.items():
                for label, rates in by_label.items():
                    obs_runs[mode][label] += rates
    finally:
        close_all(children)
    if args.aa:
        print("\nA/A control (--aa): both clusters run the defaults; 'obs off' below is the second, and "
              "defaults/off measures the estimate's own error (1.000 with no error)")
    labels = [str(r[0]) for r in rows]
    targets = {str(r[0]): r[1] for r in rows}
    rate = {mode: {label: statistics.median(runs[mode][label]) for label in labels} for mode in runs}
    print(f"\n{'measurement':<52} {'calls/s':>10}  {'target':>8}  verdict  {'obs off':>10}  defaults/off")
    for label in labels:
        on, off, target = rate["defaults"][label], rate["off"][label], targets[label]
        verdict = "" if target is None else ("PASS" if on >= target else "MISS")
        ratio = f"{on / off:.3f}" if label.startswith("handle") else ""
        print(f"{label:<52} {on:>10,.0f}  {target or '':>8}  {verdict:<7}  {off:>10,.0f}  {ratio}")
    print(f"(medians of {args.rounds} runs, each measurement made on the two clusters one after the other)")
    base_seq, base_par = rate["defaults"][labels[0]], rate["defaults"][labels[1]]
    seq_label, par_label = labels[3], labels[4]
    print(f"\nhandle / actor-call ratio: sequential {rate['defaults'][seq_label] / base_seq:.2f}, "
          f"1,000 in flight {rate['defaults'][par_label] / base_par:.2f}")
    # The raw round trip over the handle call, each run against the raw one just before it.
    seq_ratios = [raw / call for mode in runs for raw, call in zip(runs[mode][RAW], runs[mode][seq_label], strict=True)]
    seq_vs_raw = statistics.median(seq_ratios)
    print(f"sequential handle call / raw pyzmq round trip (time per call): {seq_vs_raw:.2f}x (target <= "
          f"{SEQ_RATIO_TARGET}x: {'PASS' if seq_vs_raw <= SEQ_RATIO_TARGET else 'MISS'}; per run: "
          f"{', '.join(f'{r:.2f}' for r in seq_ratios)})")

    def ratios(label: str) -> list[float]:
        """Each round's defaults / off (the two runs were made one after the other), the
        observability rounds' too."""
        return [d / o for both in (runs, obs_runs)
                for d, o in zip(both["defaults"][label], both["off"][label], strict=True)]

    handle_labels = [label for label in labels if label.startswith("handle, ")]
    obs = {label: mean_and_error(ratios(label)) for label in handle_labels}  # every handle measurement
    cost = 1 - min(mean for mean, _ in obs.values())
    print(f"observability defaults (metrics + access logs) / off, the geometric mean of {len(ratios(handle_labels[0]))} rounds' "
          "ratios +- its standard error: "
          + "; ".join(f"{label.removeprefix('handle, ')} {obs[label][0]:.3f} +- {obs[label][1]:.3f}"
                      for label in handle_labels)
          + f" (worst cost {cost:+.1%}; target <= 5%: {'PASS' if cost <= 0.05 else 'MISS'})")
    for label in handle_labels:
        print(f"  per round, {label.removeprefix('handle, ')}: {', '.join(f'{x:.3f}' for x in ratios(label))}")
    from _obs_hooks import hook_costs_us

    hooks = hook_costs_us()
    seq_us = 1e6 / rate["off"][seq_label]
    writer = hooks["replica, log flush"]  # a handle call's record counts like an HTTP request's
    agent = hooks["agent, per shipped record"]
    per_call = hooks["handle call count"] + hooks["replica, handle call"] + writer + agent
    print(f"observability hooks per handle call, timed in-process: {per_call:.2f} us (router and handle counts "
          f"{hooks['handle call count']:.2f}, replica "
          f"{hooks['replica, handle call']:.2f}, log flush {writer:.2f}, the agent writing the line "
          f"{agent:.2f}) = {per_call / seq_us:.1%} of a sequential call's {seq_us:.0f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": [{"measurement": label, "calls_per_s": round(rate["defaults"][label]),
                                 "obs_off_calls_per_s": round(rate["off"][label]), "target": targets[label]}
                                for label in labels], "obs_cost": cost, "obs_ratio_and_error": obs, "hooks_us": hooks,
                       "seq_over_raw": seq_vs_raw, "seq_over_raw_runs": seq_ratios}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
