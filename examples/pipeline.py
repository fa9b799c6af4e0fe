"""A two-model composition pipeline: a deployment graph of the Iris classifier and a novelty model.

    request ──> [DAGDriver: parse the flower, any units -> cm]
                    │
                    ├──> IrisClassifier (examples/classifier.py, batched)   species + probability
                    │            │
                    └──────────> NoveltyScorer.score(features, species)     how typical the flower is
                                                                             of that species -> answer

The classifier is examples/classifier.py's numpy softmax regression; the second model
fits, per species, the mean and covariance of the four measurements and scores a flower
by its Mahalanobis distance to the species the classifier chose: a flower far from every
training example of its species is flagged `typical: false` (a measurement error, or a
flower the classifier should not be trusted on). The classifier's answer goes to the
scorer as a response, inside the driver's replica, without a wait in user code.

    python examples/pipeline.py [--port 8000] [--once]    # needs numpy: pip install -e '.[examples]'
    curl -d '{"sepal_length": "5.1cm", "sepal_width": "35mm", "petal_length": 1.4, "petal_width": 0.2}' \\
         http://127.0.0.1:8000/pipeline

Measurements are numbers in cm or strings with a unit (cm, mm, in). It classifies a few
flowers through the handle, answers requests over HTTP, and serves until Ctrl-C; `--once`
exits after the demonstration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The replicas import examples/classifier.py too: the cluster's processes inherit this path.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from classifier import IrisClassifier, load_iris, parse_features  # noqa: E402
from starlette.requests import Request  # noqa: E402

import serve  # noqa: E402
from serve.dag import InputNode  # noqa: E402
from serve.drivers import DAGDriver  # noqa: E402

UNITS_CM = {"cm": 1.0, "mm": 0.1, "in": 2.54}
_MEASURE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(cm|mm|in)\s*$")


def to_cm(value: Any) -> Any:
    """5.1 -> 5.1; "51 mm" -> 5.1; "2in" -> 5.08; anything else is left for validation."""
    if isinstance(value, str):
        m = _MEASURE.match(value)
        if not m:
            raise ValueError(f"a measurement is a number in cm or a string like '5.1cm', '51 mm', '2 in'; "
                             f"got {value!r}")
        return round(float(m[1]) * UNITS_CM[m[2]], 4)
    return value


async def flower_request(request: Request) -> list[float]:
    """The driver's HTTP adapter: a JSON flower in any units -> 4 measurements in cm (400 if not)."""
    try:
        body = json.loads(await request.body())
    except json.JSONDecodeError as e:
        raise ValueError(f"the body must be JSON, e.g. {{\"features\": [6.7, 3.0, 5.2, 2.3]}} ({e})") from None
    if isinstance(body, dict) and "features" in body and isinstance(body["features"], list):
        body = {"features": [to_cm(v) for v in body["features"]]}
    elif isinstance(body, dict):
        body = {k: to_cm(v) for k, v in body.items()}
    elif isinstance(body, list):
        body = [to_cm(v) for v in body]
    return parse_features(body)


@serve.deployment
class NoveltyScorer:
    """Per species: mean and inverse covariance of the training flowers; a flower's squared
    Mahalanobis distance to its predicted species, against that species' 99th percentile."""

    def __init__(self, quantile: float = 0.99) -> None:
        x, y, self.classes = load_iris()
        self.stats = {}
        for k, name in enumerate(self.classes):
            rows = x[y == k]
            mean = rows.mean(axis=0)
            inv = np.linalg.inv(np.cov(rows, rowvar=False) + 1e-6 * np.eye(x.shape[1]))
            d = np.einsum("ij,jk,ik->i", rows - mean, inv, rows - mean)
            self.stats[name] = (mean, inv, float(np.quantile(d, quantile)))

    def score(self, features: list[float] | dict, prediction: dict) -> dict:
        flower = np.asarray(parse_features(features))
        mean, inv, limit = self.stats[prediction["class"]]
        distance = float((flower - mean) @ inv @ (flower - mean))
        return {**prediction, "distance": round(distance, 2), "typical": distance <= limit}


with InputNode() as flower:
    species = IrisClassifier.bind().bind(flower)  # model 1
    answer = NoveltyScorer.bind().score.bind(flower, species)  # model 2, given model 1's response
app = DAGDriver.options(route_prefix="/pipeline").bind(answer, http_adapter=flower_request)


def post(url: str, body: Any) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=None, help="default 8000, or $ZEROSERVE_HTTP_PORT")
    parser.add_argument("--once", action="store_true", help="exit after the demonstration")
    args = parser.parse_args()

    t0 = time.perf_counter()
    port = args.port or serve.HTTPOptions().port
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    handle = serve.run(app, name="pipeline")
    print(f"deployed {', '.join(sorted(serve.list_deployments()))} in {time.perf_counter() - t0:.1f}s")
    for features in ([5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.0, 3.4, 4.5, 0.2]):
        print(f"handle: {features} -> {handle.predict.remote(features).result()}")

    url = f"http://127.0.0.1:{port}/pipeline"
    body = {"sepal_length": "5.1cm", "sepal_width": "35mm", "petal_length": 1.4, "petal_width": 0.2}
    for _ in range(300):  # the proxy learns the route within moments of the deploy
        try:
            status, result = post(url, body)
            break
        except OSError:
            time.sleep(0.1)
    print(f"POST {url} {json.dumps(body)} -> {status} {result}")
    for bad in ({"features": [6.7, "3 ft", 5.2, 2.3]}, {"features": [1, 2]}):
        status, result = post(url, bad)
        print(f"POST {url} {json.dumps(bad)} -> {status} {result}")
    print(f"\nServing on {url} - try:\n"
          f"    curl -d '{json.dumps(body)}' {url}\n"
          f"    curl -d '{{\"features\": [6.7, 3.0, 5.2, 2.3]}}' {url}\nCtrl-C to stop.", flush=True)
    if not args.once:
        threading.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # whenever it comes, even mid-deploy
        pass
    finally:
        serve.shutdown()
