"""The composition pipeline over HTTP: examples/pipeline.py's graph against one model, one run.

Three applications are served side by side and hit with wrk (POSTs of one JSON flower),
`--rounds` times alternating (the machine is shared: a noisy moment hits all three):
- `single`: the Iris classifier alone (examples/classifier.py) — the baseline, one hop;
- `pipeline`: examples/pipeline.py — DAGDriver -> classifier -> novelty scorer;
- `manual`: the same two models composed by hand in an ingress deployment (awaiting one
  handle, then the other): what the graph costs over writing the composition yourself.
Prints the median req/s, p50/p99 latency of each and the ratios to `single`.

    python benchmarks/pipeline_http.py [--seconds 3] [--rounds 3] [--connections 1,32] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path[:0] = [ROOT, EXAMPLES]
# replicas import the example modules too: the cluster's processes inherit this path
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, EXAMPLES, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("ZEROSERVE_QUIET", "1")

from classifier import IrisClassifier  # noqa: E402
from http_noop import ensure_wrk, free_port, routes, run_wrk, wait_http  # noqa: E402
from pipeline import NoveltyScorer, flower_request  # noqa: E402
from pipeline import app as pipeline_app  # noqa: E402

import serve  # noqa: E402

BODY = '{"features": [6.7, 3.0, 5.2, 2.3]}'


@serve.deployment(route_prefix="/manual")
class ManualPipeline:
    """The pipeline's composition written by hand: the same adapter and models."""

    def __init__(self, classifier, scorer) -> None:
        self.classifier = classifier
        self.scorer = scorer

    async def __call__(self, request):
        features = await flower_request(request)
        species = await self.classifier.remote(features)
        return await self.scorer.score.remote(features, species)


def check(url: str) -> None:
    req = urllib.request.Request(url, data=BODY.encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.loads(r.read())
    assert answer.get("class") == "virginica", (url, answer)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per figure; the median counts")
    parser.add_argument("--connections", default="1,32", help="wrk connections, comma-separated")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    wrk = ensure_wrk()
    port = free_port()
    serve.start(http_options={"port": port})
    results: list[dict] = []
    try:
        serve.run(IrisClassifier.options(name="single").bind(), name="single", route_prefix="/single")
        serve.run(pipeline_app, name="pipeline")
        serve.run(ManualPipeline.bind(IrisClassifier.options(name="manual_classifier").bind(),
                                      NoveltyScorer.options(name="manual_scorer").bind()), name="manual")
        wait_http(f"http://127.0.0.1:{port}/-/routes")
        names = ("single", "pipeline", "manual")
        deadline = time.monotonic() + 30
        while not {f"/{n}" for n in names} <= set(routes(port)):  # the proxy learns the routes
            if time.monotonic() > deadline:
                raise SystemExit(f"the proxy has not learned the routes: {routes(port)}")
            time.sleep(0.1)
        for name in names:
            check(f"http://127.0.0.1:{port}/{name}")
        for c in levels:
            runs: dict[str, list[dict]] = {name: [] for name in names}
            for _ in range(args.rounds):
                for name in names:
                    runs[name].append(run_wrk(wrk, f"http://127.0.0.1:{port}/{name}", c, args.seconds, body=BODY,
                                                 warmup=True))
            for name in names:
                measured = sorted(runs[name], key=lambda m: m["rps"])
                median = dict(measured[len(measured) // 2])
                median.update(app=name, connections=c, all_rps=[round(m["rps"]) for m in runs[name]])
                results.append(median)
                print(f"  c={c:<3} {name:<9} {median['rps']:>8,.0f} req/s  p50 {median['p50_ms']:6.2f} ms  "
                      f"p99 {median['p99_ms']:6.2f} ms  (rounds: {', '.join(f'{m:,}' for m in median['all_rps'])})",
                      flush=True)
    finally:
        serve.shutdown()
    print(f"\n{'connections':<12}{'app':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}  vs single")
    for r in results:
        base = next(b for b in results if b["app"] == "single" and b["connections"] == r["connections"])
        print(f"{r['connections']:<12}{r['app']:<10}{r['rps']:>9,.0f}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}  "
              f"{r['rps'] / base['rps']:.2f}x req/s, +{r['p50_ms'] - base['p50_ms']:.2f} ms p50")
    if any(r["non_2xx"] for r in results):
        print("non-2xx responses: " + ", ".join(f"c={r['connections']} {r['app']}: {r['non_2xx']}"
                                                for r in results if r["non_2xx"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
