"""The example app: a two-stage text pipeline served on an embedded local cluster.

`make run` runs this. It deploys a tokenizer and a small lexicon-based sentiment model
(two replicas) composed behind an ingress deployment, serves it over HTTP on
127.0.0.1:8000 (`--port P`, or `$ZEROSERVE_HTTP_PORT`; a port in use is a one-line error)
and prints the curl line to try, calls it through a Python handle too, and keeps serving
until Ctrl-C. `--once` exits after the demonstration.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import threading
import time
import urllib.request

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

    async def __call__(self, request) -> dict:
        # Over HTTP a starlette Request arrives (?text=... or the body); from a handle, the text.
        text = request if isinstance(request, str) else (
            request.query_params.get("text") or (await request.body()).decode())
        return await self.model.remote(self.tokenizer.remote(text))  # a response passed straight on


app = Pipeline.bind(Tokenizer.bind(), Sentiment.bind())


def _port() -> int:
    raw = sys.argv[sys.argv.index("--port") + 1] if "--port" in sys.argv else os.environ.get("ZEROSERVE_HTTP_PORT", "8000")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        sys.exit(f"serve_app: the HTTP port must be a number from 1 to 65535 (--port or $ZEROSERVE_HTTP_PORT), got {raw!r}")
    port = int(raw)
    with socket.socket() as s:  # say it now, in one line, rather than after starting a cluster
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            sys.exit(f"serve_app: cannot serve on 127.0.0.1:{port} ({e.strerror}); set $ZEROSERVE_HTTP_PORT "
                     "(or pass --port) to a free port")
    return port


def main() -> None:
    port = _port()
    t0 = time.perf_counter()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
    except RuntimeError as e:  # the port was taken after the check above
        sys.exit(f"serve_app: {str(e).splitlines()[0]}")
    handle = serve.run(app, route_prefix="/sentiment")
    print(f"deployed in {time.perf_counter() - t0:.1f}s: {sorted(serve.list_deployments())}")
    for text in ("I love this, it is great", "slow and broken", "it is a chair"):
        print(f"{text!r:32} -> {handle.remote(text).result()}")
    t0 = time.perf_counter()
    results = [r.result() for r in [handle.remote(f"good day number {i}") for i in range(200)]]
    replicas = sorted({r["replica"] for r in results})
    print(f"200 concurrent requests in {(time.perf_counter() - t0) * 1000:.0f} ms, spread over replicas {replicas}")
    for name, d in serve.status()["applications"]["default"]["deployments"].items():
        print(f"  {name}: {d['status']}, replicas {d['replicas']}")
    url = f"http://127.0.0.1:{port}/sentiment?text=what+a+great+day"
    for _ in range(100):  # the proxy learns the route within moments of the deploy
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                print(f"GET {url} -> {json.loads(r.read())}")
            break
        except OSError:
            time.sleep(0.1)
    print(f"\nServing on http://127.0.0.1:{port} - try:\n    curl 'http://127.0.0.1:{port}/sentiment?text=I+love+it'\n"
          f"    curl -d 'slow and broken' http://127.0.0.1:{port}/sentiment\nCtrl-C to stop.", flush=True)
    if "--once" not in sys.argv:
        threading.Event().wait()  # until Ctrl-C


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # whenever it comes, even mid-deploy
        pass
    finally:
        serve.shutdown()
