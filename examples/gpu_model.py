"""A model on GPUs when there are some, on the CPU otherwise: fractional GPUs per replica.

Four replicas of an Iris classifier (softmax regression trained at start-up on
examples/data/iris.csv), each asking for half a GPU: the scheduler gives each replica a
device of its node, two replicas per device, and sets CUDA_VISIBLE_DEVICES in the
replica before its code runs, so torch sees only that device (as `cuda:0`). With torch
installed and CUDA available the model trains and predicts there; otherwise it runs on
the CPU (torch's, or numpy's without torch).

    pip install torch                             # optional: without it, numpy on the CPU
    python examples/gpu_model.py                  # the GPUs this machine has (nvidia-smi)
    python examples/gpu_model.py --num-gpus 2     # pretend 2 devices (see the placement on a CPU machine)
    curl -d '{"features": [6.7, 3.0, 5.2, 2.3]}' http://127.0.0.1:8000/iris-gpu

It prints where each replica runs (its devices, CUDA_VISIBLE_DEVICES, the torch device),
classifies the training set through a handle, answers one HTTP request and serves until
Ctrl-C; `--once` exits after the demonstration. On a cluster started with
`zeroserve start --head --num-gpus 2`, pass `--address auto`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import threading
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from starlette.requests import Request

import actors
import serve

DATA = Path(__file__).resolve().parent / "data" / "iris.csv"
REPLICAS = 4
GPU_SHARE = 0.5


def load_iris() -> tuple[np.ndarray, np.ndarray, list[str]]:
    with DATA.open() as f:
        rows = [r for r in csv.reader(f) if r and not r[0].startswith("sepal")]
    species = sorted({r[4] for r in rows})
    x = np.array([[float(v) for v in r[:4]] for r in rows], dtype=np.float32)
    y = np.array([species.index(r[4]) for r in rows])
    return x, y, species


class Backend:
    """Softmax regression on torch (cuda when visible) or numpy: train and predict."""

    def __init__(self) -> None:
        try:
            import torch
        except ImportError:
            self.torch = None
            self.device = "cpu (numpy)"
        else:
            self.torch = torch
            self.device = "cuda:0" if torch.cuda.is_available() else "cpu"

    def fit(self, x: np.ndarray, y: np.ndarray, classes: int, steps: int = 600, lr: float = 0.5) -> None:
        self.mean, self.std = x.mean(0), x.std(0)
        z = (x - self.mean) / self.std
        onehot = np.eye(classes, dtype=np.float32)[y]
        if self.torch is not None:
            t = self.torch
            zt, yt = t.tensor(z, device=self.device), t.tensor(onehot, device=self.device)
            w = t.zeros((4, classes), device=self.device)
            b = t.zeros(classes, device=self.device)
            for _ in range(steps):
                p = t.softmax(zt @ w + b, dim=1)
                w -= lr * zt.T @ (p - yt) / len(zt)
                b -= lr * (p - yt).mean(0)
            self.w, self.b = w, b
        else:
            w, b = np.zeros((4, classes), dtype=np.float32), np.zeros(classes, dtype=np.float32)
            for _ in range(steps):
                p = _softmax(z @ w + b)
                w -= lr * z.T @ (p - onehot) / len(z)
                b -= lr * (p - onehot).mean(0)
            self.w, self.b = w, b

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        if self.torch is not None:
            zt = self.torch.tensor(z, device=self.device)
            return self.torch.softmax(zt @ self.w + self.b, dim=1).cpu().numpy()
        return _softmax(z @ self.w + self.b)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@serve.deployment(num_replicas=REPLICAS, route_prefix="/iris-gpu")
class IrisOnGpu:
    def __init__(self) -> None:
        x, y, self.species = load_iris()
        self.backend = Backend()
        self.backend.fit(x, y, len(self.species))
        self.accuracy = float((self.backend.predict(x).argmax(1) == y).mean())

    def where(self) -> dict[str, Any]:
        return {"replica": serve.get_replica_context().replica_tag, "gpu_ids": actors.get_gpu_ids(),
                "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "device": self.backend.device,
                "accuracy": round(self.accuracy, 3)}

    def classify(self, rows: list[list[float]]) -> list[str]:
        return [self.species[i] for i in self.backend.predict(np.array(rows)).argmax(1)]

    async def __call__(self, request: Request) -> dict[str, Any]:
        features = (await request.json())["features"]
        p = self.backend.predict(np.array([features]))[0]
        return {"class": self.species[int(p.argmax())], "probability": round(float(p.max()), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--address", help="a running cluster (auto, or HOST:PORT); default: a local one")
    parser.add_argument("--num-gpus", type=int, help="devices the local cluster offers (default: detected)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--once", action="store_true", help="exit after the demonstration")
    args = parser.parse_args()
    actors.init(address=args.address, num_gpus=args.num_gpus)
    gpus = actors.cluster_resources().get("GPU", 0.0)
    share = GPU_SHARE if gpus else 0.0
    print(f"cluster GPUs: {gpus:g}; each replica asks for {share:g} of one" + ("" if gpus else " (none: CPU only)"))
    serve.start(http_options={"port": args.port})
    app = IrisOnGpu.options(actor_options={"num_gpus": share})
    handle = serve.run(app.bind(), name="iris-gpu", route_prefix="/iris-gpu")
    seen: dict[str, dict[str, Any]] = {}
    for _ in range(200):
        view = handle.where.remote().result()
        seen[view["replica"]] = view
        if len(seen) == REPLICAS:
            break
    for tag, view in sorted(seen.items()):
        print(f"replica {tag}: gpu_ids={view['gpu_ids']} CUDA_VISIBLE_DEVICES={view['CUDA_VISIBLE_DEVICES']} "
              f"device={view['device']} training accuracy {view['accuracy']}")
    x, y, species = load_iris()
    labels = handle.classify.remote(x.tolist()).result()
    accuracy = np.mean([species[t] == p for t, p in zip(y, labels, strict=True)])
    print(f"all 150 rows through the handle: accuracy {accuracy:.3f}")
    url = f"http://127.0.0.1:{args.port}/iris-gpu"
    body = json.dumps({"features": [6.7, 3.0, 5.2, 2.3]}).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=30) as r:
        print(f"POST {url} {body.decode()} -> {r.status} {json.loads(r.read())}")
    if not args.once:
        print(f"serving at {url}; Ctrl-C to stop")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
    serve.shutdown()


if __name__ == "__main__":
    main()
