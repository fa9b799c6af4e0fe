"""A real small model served with batching: an Iris classifier over HTTP and handles.

A multinomial logistic-regression (softmax) classifier written with numpy is trained at
start-up, in the replica, on the Iris data set shipped in examples/data/iris.csv (150
flowers, 4 measurements, 3 species). Requests are single flowers; `@serve.batch` gathers
the ones that arrive together so the model predicts on a matrix at once.

    python examples/classifier.py [--port 8000] [--once]     # needs numpy: pip install -e '.[examples]'
    curl -d '{"features": [6.7, 3.0, 5.2, 2.3]}' http://127.0.0.1:8000/iris
    curl -d '{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}' \\
         http://127.0.0.1:8000/iris

It prints the training accuracy, classifies every training row through a handle at once
(showing the batches that formed), answers one request over HTTP, and serves until
Ctrl-C; `--once` exits after the demonstration.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse

import serve

DATA = Path(__file__).resolve().parent / "data" / "iris.csv"
FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def load_iris(path: Path = DATA) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (n, 4), class indices (n,) and the class names, from the CSV."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({row["species"] for row in rows})
    x = np.array([[float(row[name]) for name in FEATURES] for row in rows])
    y = np.array([classes.index(row["species"]) for row in rows])
    return x, y, classes


class SoftmaxRegression:
    """Multinomial logistic regression on standardised features, fitted by gradient descent."""

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 2000, lr: float = 0.5,
            l2: float = 1e-4) -> SoftmaxRegression:
        self.mean, self.std = x.mean(axis=0), x.std(axis=0)
        z = (x - self.mean) / self.std
        onehot = np.eye(int(y.max()) + 1)[y]
        self.w = np.zeros((x.shape[1], onehot.shape[1]))
        self.b = np.zeros(onehot.shape[1])
        for _ in range(epochs):
            grad = (self._softmax(z @ self.w + self.b) - onehot) / len(x)
            self.w -= lr * (z.T @ grad + l2 * self.w)
            self.b -= lr * grad.sum(axis=0)
        return self

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self._softmax(((x - self.mean) / self.std) @ self.w + self.b)


def parse_features(body: Any) -> list[float]:
    """[4 numbers], {"features": [4 numbers]} or {"sepal_length": .., ...}; ValueError if not."""
    if isinstance(body, dict) and "features" in body:
        body = body["features"]
    elif isinstance(body, dict):
        missing = [name for name in FEATURES if name not in body]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}: send {{\"features\": [4 numbers]}} or the keys "
                             f"{', '.join(FEATURES)}")
        body = [body[name] for name in FEATURES]
    if not isinstance(body, (list, tuple)) or len(body) != len(FEATURES) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in body):
        raise ValueError(f"features must be {len(FEATURES)} finite numbers ({', '.join(FEATURES)}), got {body!r}")
    return [float(v) for v in body]


@serve.deployment(route_prefix="/iris")
class IrisClassifier:
    def __init__(self) -> None:
        x, y, self.classes = load_iris()
        self.model = SoftmaxRegression().fit(x, y)
        self.train_accuracy = float((self.model.predict_proba(x).argmax(axis=1) == y).mean())
        self.batches = self.items = self.largest_batch = 0

    async def __call__(self, request: Request | list[float] | dict) -> Any:
        """Over HTTP a JSON body (400 if it is not a flower); from a handle, the features."""
        if not isinstance(request, Request):
            return await self._classify(parse_features(request))
        try:
            features = parse_features(json.loads(await request.body()))
        except json.JSONDecodeError as e:
            return JSONResponse({"error": f"the body must be JSON, e.g. {{\"features\": [6.7, 3.0, 5.2, 2.3]}} "
                                          f"({e})"}, status_code=400)
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        return await self._classify(features)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
    async def _classify(self, batch: list[list[float]]) -> list[dict]:
        """One flower per caller; the model sees the whole batch at once."""
        return self.predict(batch)

    def predict(self, batch: list[list[float]]) -> list[dict]:
        self.batches += 1
        self.items += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        probs = self.model.predict_proba(np.asarray(batch, dtype=float))
        best = probs.argmax(axis=1)
        return [{"class": self.classes[k], "probability": round(float(p[k]), 4)} for k, p in zip(best, probs, strict=True)]

    def stats(self) -> dict:
        return {"train_accuracy": self.train_accuracy, "batches": self.batches, "items": self.items,
                "largest_batch": self.largest_batch}


app = IrisClassifier.bind()


async def classify_all(handle: serve.DeploymentHandle, x: np.ndarray) -> list[dict]:
    return await asyncio.gather(*(handle.remote(row.tolist()) for row in x))


def post(url: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
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
    handle = serve.run(app)
    stats = handle.stats.remote().result()
    print(f"deployed in {time.perf_counter() - t0:.1f}s; the replica trained on {DATA.name}: "
          f"training accuracy {stats['train_accuracy']:.3f}")
    print(f"handle: [5.1, 3.5, 1.4, 0.2] -> {handle.remote([5.1, 3.5, 1.4, 0.2]).result()}")

    x, y, classes = load_iris()
    before = handle.stats.remote().result()
    t0 = time.perf_counter()
    answers = asyncio.run(classify_all(handle, x))
    elapsed = time.perf_counter() - t0
    after = handle.stats.remote().result()
    accuracy = float(np.mean([a["class"] == classes[k] for a, k in zip(answers, y, strict=True)]))
    print(f"all {len(x)} rows through the handle at once: accuracy {accuracy:.3f} in {elapsed * 1000:.0f} ms, "
          f"{after['items'] - before['items']} requests in {after['batches'] - before['batches']} batches "
          f"(largest {after['largest_batch']})")

    url = f"http://127.0.0.1:{port}/iris"
    for _ in range(100):  # the proxy learns the route within moments of the deploy
        try:
            status, answer = post(url, {"features": [6.7, 3.0, 5.2, 2.3]})
            break
        except OSError:
            time.sleep(0.1)
    print(f"POST {url} {{\"features\": [6.7, 3.0, 5.2, 2.3]}} -> {status} {answer}")
    status, answer = post(url, {"features": [1, 2]})
    print(f"POST {url} {{\"features\": [1, 2]}} -> {status} {answer}")
    print(f"\nServing on {url} - try:\n"
          f"    curl -d '{{\"features\": [6.7, 3.0, 5.2, 2.3]}}' {url}\n"
          f"    curl -d '{{\"sepal_length\": 5.1, \"sepal_width\": 3.5, \"petal_length\": 1.4, "
          f"\"petal_width\": 0.2}}' {url}\nCtrl-C to stop.", flush=True)
    if not args.once:
        threading.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # whenever it comes, even mid-deploy
        pass
    finally:
        serve.shutdown()
