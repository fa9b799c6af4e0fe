"""The controller's reconcile loop: what one tick costs at 10, 100 and 1,000 deployments.

Runs the real `ServeController` in-process on fake replica IO (`ControllerIO` is the seam:
replicas and proxies are fake handles whose calls answer at once, the head is a dict),
deploys N applications of one replica each, waits until all are HEALTHY, then times
`controller.step(now)` ticks of 0.1 s of controller clock:

- idle: no health check due, nothing changing (the floor of a tick);
- steady: health checks every 10 s (the default), amortized over 20 s of ticks;
- one change: a tick right after one application is redeployed with a new config
  (the tick that starts its new replica, publishes its replica set and the status).

Target (issue 17): the cost grows with changes, not with the number of deployments: the
idle tick at 1,000 deployments costs about what it does at 10.

    python benchmarks/reconcile_cost.py [--sizes 10,100,1000] [--root CHECKOUT] [--json PATH]

`--root` runs another checkout's code (e.g. main's, for a before/after comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

IDLE_RATIO_MAX = 3.0  # idle tick at the largest size / at the smallest


class _Id:
    __slots__ = ("hex",)

    def __init__(self, n: int) -> None:
        self.hex = f"{n:08x}"


class _Handle:
    __slots__ = ("actor_id", "key")
    _n = 0

    def __init__(self, key: Any) -> None:
        _Handle._n += 1
        self.key, self.actor_id = key, _Id(_Handle._n)


class _Done:
    """A call answered at once (`ready` answers when the test says so)."""

    __slots__ = ("_done", "_value")

    def __init__(self, value: Any, done: bool = True) -> None:
        self._value, self._done = value, done

    def done(self) -> bool:
        return self._done

    def result(self, timeout: float | None = None) -> Any:
        return self._value


class _Replicas:
    def __init__(self) -> None:
        self.waiting: list[_Done] = []  # `ready` calls not answered yet

    def start(self, target: Any, replica_id: Any) -> _Handle:
        return _Handle(replica_id)

    def call(self, handle: Any, method: str, *args: Any) -> _Done:
        if method == "ready":
            pending = _Done({"pid": 1}, done=False)
            self.waiting.append(pending)
            return pending
        return _Done(True if method == "check_health" else None)

    def kill(self, handle: Any) -> _Done:
        return _Done(None)

    def placement(self, handle: Any) -> _Done:
        return _Done(None, done=False)

    def answer(self) -> None:
        for p in self.waiting:
            p._done = True
        self.waiting.clear()


class _Proxies(_Replicas):
    def start(self, node: Any, http_options: Any) -> _Handle:  # type: ignore[override]
        return _Handle(node)

    def call(self, handle: Any, method: str, *args: Any) -> _Done:
        return _Done("http://127.0.0.1:8000" if method == "ready" else None)


class FakeIO:
    def __init__(self, node: Any) -> None:
        self.replicas, self.proxies = _Replicas(), _Proxies()
        self.node = node
        self.kv: dict[str, bytes] = {}
        self.settings: Any = None

    async def nodes(self) -> list[Any]:
        return [self.node]

    async def kv_get(self, key: str) -> bytes | None:
        return self.kv.get(key)

    async def kv_put(self, key: str, blob: bytes) -> None:
        self.kv[key] = blob

    async def kv_delete(self, key: str) -> None:
        self.kv.pop(key, None)

    async def kv_keys(self, prefix: str) -> list[str]:
        return [k for k in self.kv if k.startswith(prefix)]

    async def max_value_bytes(self) -> int:
        return 16 * 2**20

    async def publish_summary(self, blob: bytes) -> None:
        self.kv["summary"] = blob

    async def drop_records(self, timeout_s: float) -> None:
        self.kv.clear()

    async def find_replica(self, replica_id: Any) -> None:
        return None

    async def running_proxies(self) -> list[Any]:
        return []

    def on_actor_death(self, callback: Any) -> None:
        pass


async def measure(n: int, ticks: int = 100) -> dict[str, float]:
    """Per-tick cost in µs at `n` deployments: idle, steady (health checks), one change."""
    from serve._config import DeploymentConfig
    from serve._control.controller import ServeController
    from serve._control.proxy_state import NodeView
    from serve.messages import DeploymentTarget

    now = [1000.0]
    io = FakeIO(NodeView("n1", "127.0.0.1", True, True))
    c = ServeController(http_options={"location": "HeadOnly"}, io=io, clock=lambda: now[0], run_loop=False)
    await c.ready()

    def target(i: int, user_config: Any = None) -> Any:
        return DeploymentTarget("d", f"app{i}", "v1", b"code", DeploymentConfig(num_replicas=1, user_config=user_config),
                                f"/app{i}", False, True)

    await c.deploy_apps({f"app{i}": [target(i)] for i in range(n)})  # one config file of n applications

    async def tick(dt: float = 0.1) -> float:
        now[0] += dt
        t0 = time.perf_counter()
        await c.step(now[0])
        return time.perf_counter() - t0

    for _ in range(50):  # all ready, all HEALTHY
        io.replicas.answer()
        await tick()
        st = await c.status()
        if all(a["status"] == "RUNNING" for a in st["applications"].values()) and len(st["applications"]) == n:
            break
    else:
        raise SystemExit(f"{n} deployments never all HEALTHY")
    # Idle: ticks where no health check is due (just after a round of them).
    for _ in range(110):  # 11 s: every replica's health check went out and came back
        await tick()
    idle = [await tick(0.0) for _ in range(ticks)]  # the clock stands: nothing comes due
    steady = [await tick() for _ in range(200)]  # 20 s: two health checks per replica
    changes = []
    for k in range(min(20, n)):
        await c.deploy_apps({f"app{k}": [target(k, user_config={"k": k})]})
        changes.append(await tick())
    return {"deployments": n, "idle_tick_us": round(statistics.median(idle) * 1e6, 1),
            "steady_tick_us": round(statistics.mean(steady) * 1e6, 1),
            "change_tick_us": round(statistics.median(changes) * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--root", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(args.root).resolve()))
    import logging

    logging.disable(logging.WARNING)
    rows = [asyncio.run(measure(int(n))) for n in args.sizes.split(",")]
    print(f"reconcile tick cost with fake replica IO ({args.root}):")
    print(f"{'deployments':>12} {'idle tick':>12} {'steady tick':>12} {'tick w/ 1 change':>17}")
    for r in rows:
        print(f"{r['deployments']:>12} {r['idle_tick_us']:>10.0f}µs {r['steady_tick_us']:>10.0f}µs "
              f"{r['change_tick_us']:>15.0f}µs")
    ratio = rows[-1]["idle_tick_us"] / max(rows[0]["idle_tick_us"], 1e-3)
    ok = ratio <= IDLE_RATIO_MAX
    print(f"idle tick at {rows[-1]['deployments']} / at {rows[0]['deployments']} deployments: {ratio:.1f}x "
          f"(baseline: the same tick at {rows[0]['deployments']}; target <= {IDLE_RATIO_MAX:.0f}x) -> "
          f"{'PASS' if ok else 'MISS'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "idle_ratio": round(ratio, 2), "pass": ok}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
