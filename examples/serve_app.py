"""The example app: a two-stage text pipeline served on an embedded local cluster.

`make run` runs this. It deploys a tokenizer and a small lexicon-based sentiment model
(two replicas, batched by nothing yet), composes them behind an ingress deployment, and
calls it through a handle: sequentially, then 200 requests at once. The HTTP proxy comes
with the HTTP ingress issue; until then the app is reached through its Python handle.
"""

from __future__ import annotations

import re
import time

import serve

POSITIVE = {"good", "great", "love", "excellent", "fast", "happy", "nice", "wonderful"}
NEGATIVE = {"bad", "awful", "hate", "slow", "terrible", "sad", "broken", "poor"}


@serve.deployment
class Tokenizer:
    def __call__(self, text: str) -> list[str]:
        return re.findall(r"[a-z']+", text.lower())


@serve.deployment(num_replicas=2, user_config={"threshold": 0.0})
class Sentiment:
    def __init__(self) -> None:
        self.threshold = 0.0

    def reconfigure(self, config: dict) -> None:
        self.threshold = float(config["threshold"])

    def __call__(self, tokens: list[str]) -> dict:
        score = sum(t in POSITIVE for t in tokens) - sum(t in NEGATIVE for t in tokens)
        label = "positive" if score > self.threshold else "negative" if score < -self.threshold else "neutral"
        return {"label": label, "score": score, "replica": serve.get_replica_context().replica_tag}


@serve.deployment
class Pipeline:
    def __init__(self, tokenizer: serve.DeploymentHandle, model: serve.DeploymentHandle) -> None:
        self.tokenizer = tokenizer
        self.model = model

    async def __call__(self, text: str) -> dict:
        return await self.model.remote(self.tokenizer.remote(text))  # a response passed straight on


app = Pipeline.bind(Tokenizer.bind(), Sentiment.bind())


def main() -> None:
    t0 = time.perf_counter()
    handle = serve.run(app)
    print(f"deployed in {time.perf_counter() - t0:.1f}s: {sorted(serve.list_deployments())}")
    for text in ("I love this, it is great", "slow and broken", "it is a chair"):
        print(f"{text!r:32} -> {handle.remote(text).result()}")
    t0 = time.perf_counter()
    results = [r.result() for r in [handle.remote(f"good day number {i}") for i in range(200)]]
    replicas = sorted({r["replica"] for r in results})
    print(f"200 concurrent requests in {(time.perf_counter() - t0) * 1000:.0f} ms, spread over replicas {replicas}")
    for name, d in serve.status()["applications"]["default"]["deployments"].items():
        print(f"  {name}: {d['status']}, replicas {d['replicas']}")
    serve.shutdown()


if __name__ == "__main__":
    main()
