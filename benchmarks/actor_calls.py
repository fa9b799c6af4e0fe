"""Actor call latency and throughput, against a raw pyzmq ping-pong baseline.

Run it with `python benchmarks/actor_calls.py` (or `make bench`); `--quick` for a short
smoke run, `--json PATH` to also write the figures as JSON.

Measured, all over loopback TCP between two processes, with uvloop everywhere:
- raw baseline: a zmq.asyncio DEALER pinging a ROUTER echo server in a child process,
  without and with CURVE (zeroserve always uses CURVE): sequential round trip (median,
  p99) and pipelined throughput with 1,000 messages in flight;
- zeroserve on an embedded local cluster (`actors.init()`): sequential round trips of
  an empty async (and sync) method from an async driver (one thread hop to the runtime's
  loop), a sync driver, and from inside a Caller actor (no hop: the serving layer's path);
  then throughput with 1,000 calls in flight from the driver and from inside the actor.

Targets checked: round trip <= 2x the raw ping-pong; >= 20,000 calls/s with 1,000 in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

import uvloop
import zmq
import zmq.asyncio

import actors

PAYLOAD = b"x" * 16
WINDOW = 1000
RTT_FACTOR = 2.0
THROUGHPUT_TARGET = 20_000.0


# -- raw pyzmq baseline -------------------------------------------------------------------
def echo_server(conn: Connection, curve_secret: bytes) -> None:
    """Child process: ROUTER echo servers (plain and CURVE); sends its ports when bound."""
    uvloop.run(_serve_echo(conn, curve_secret))


async def _serve_echo(conn: Connection, curve_secret: bytes) -> None:
    ctx = zmq.asyncio.Context()
    plain, secure = ctx.socket(zmq.ROUTER), ctx.socket(zmq.ROUTER)
    secure.curve_server = True
    secure.curve_secretkey = curve_secret
    for sock in (plain, secure):
        sock.sndhwm = sock.rcvhwm = 10 * WINDOW
    ports = [sock.bind_to_random_port("tcp://127.0.0.1") for sock in (plain, secure)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_reader(conn.fileno(), stop.set)  # the parent writes or closes
    conn.send(ports)
    tasks = [asyncio.create_task(_echo(sock)) for sock in (plain, secure)]
    await stop.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    ctx.destroy(linger=0)


async def _echo(sock: zmq.asyncio.Socket) -> None:
    while True:
        await sock.send_multipart(await sock.recv_multipart())


async def raw_client(port: int, curve: tuple[bytes, bytes, bytes] | None, n_seq: int, n_pipe: int) -> dict:
    """Sequential round trips then pipelined throughput against one echo server."""
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.sndhwm = sock.rcvhwm = 10 * WINDOW
    if curve is not None:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = curve
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:

        async def once() -> None:
            await sock.send(PAYLOAD)
            await sock.recv()

        await timed_seq(once, max(100, n_seq // 10))  # warm-up (and the CURVE handshake)
        seq = await timed_seq(once, n_seq)
        t0 = time.perf_counter()
        sent = received = 0
        while received < n_pipe:
            while sent < n_pipe and sent - received < WINDOW:
                await sock.send(PAYLOAD)
                sent += 1
            await sock.recv()
            received += 1
        return {**summarize(seq), "throughput": n_pipe / (time.perf_counter() - t0)}
    finally:
        ctx.destroy(linger=0)


# -- zeroserve --------------------------------------------------------------------------
@actors.remote
class Target:
    async def noop(self) -> None:
        return None

    def noop_sync(self) -> None:
        return None


@actors.remote
class Caller:
    async def run_seq(self, target: actors.ActorHandle, n: int) -> list[float]:
        """Per-call round trips (s) of `await target.noop.remote()`, n times in a row."""
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            await target.noop.remote()
            samples.append(time.perf_counter() - t0)
        return samples

    async def run_window(self, target: actors.ActorHandle, total: int, window: int) -> float:
        """calls/s with exactly `window` calls in flight (a new call as each one ends)."""
        done = asyncio.get_running_loop().create_future()
        sent = received = 0

        def launch() -> None:
            nonlocal sent
            sent += 1
            target.noop.remote().future().add_done_callback(finished)

        def finished(fut: asyncio.Future) -> None:
            nonlocal received
            received += 1
            if fut.exception() is not None and not done.done():
                done.set_exception(fut.exception())
            elif received == total and not done.done():
                done.set_result(None)
            elif sent < total:
                launch()

        t0 = time.perf_counter()
        for _ in range(min(window, total)):
            launch()
        await done
        return total / (time.perf_counter() - t0)

    async def run_gather(self, target: actors.ActorHandle, total: int, window: int) -> float:
        """calls/s of `await asyncio.gather(*refs)` over batches of `window` calls."""
        t0 = time.perf_counter()
        for _ in range(total // window):
            await asyncio.gather(*[target.noop.remote() for _ in range(window)])
        return (total // window * window) / (time.perf_counter() - t0)


async def timed_seq(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - t0)
    return samples


def sync_seq(call: Callable[[], Any], n: int) -> list[float]:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


async def driver_gather(h: actors.ActorHandle, total: int) -> float:
    t0 = time.perf_counter()
    for _ in range(total // WINDOW):
        await asyncio.gather(*[h.noop.remote() for _ in range(WINDOW)])
    return (total // WINDOW * WINDOW) / (time.perf_counter() - t0)


def driver_get_windows(h: actors.ActorHandle, total: int) -> float:
    t0 = time.perf_counter()
    for _ in range(total // WINDOW):
        actors.get([h.noop.remote() for _ in range(WINDOW)])
    return (total // WINDOW * WINDOW) / (time.perf_counter() - t0)


def summarize(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median_us": s[len(s) // 2] * 1e6, "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] * 1e6}


def run_zeroserve(n_seq: int, n_pipe: int) -> dict[str, dict[str, float]]:
    warm = max(100, n_seq // 10)
    target, caller = Target.remote(), Caller.remote()
    actors.get([target.noop.remote(), target.noop_sync.remote(), caller.run_seq.remote(target, 1)])
    out: dict[str, dict[str, float]] = {}
    actors.get(caller.run_seq.remote(target, warm))
    out["in-actor  await target.noop.remote()"] = summarize(actors.get(caller.run_seq.remote(target, n_seq)))

    async def async_driver() -> tuple[list[float], float]:
        await timed_seq(lambda: target.noop.remote(), warm)
        seq = await timed_seq(lambda: target.noop.remote(), n_seq)
        await driver_gather(target, WINDOW)
        return seq, await driver_gather(target, n_pipe)

    seq, async_tput = uvloop.run(async_driver())
    out["async driver  await h.noop.remote()"] = summarize(seq)
    for label, fn in (("sync driver  actors.get(h.noop.remote())", lambda: actors.get(target.noop.remote())),
                      ("sync driver  h.noop_sync.remote().result()", lambda: target.noop_sync.remote().result())):
        sync_seq(fn, warm)
        out[label] = summarize(sync_seq(fn, n_seq))
    actors.get(caller.run_window.remote(target, WINDOW, WINDOW))
    out["in-actor  sliding window of refs"] = {"throughput": actors.get(caller.run_window.remote(target, n_pipe, WINDOW))}
    actors.get(caller.run_gather.remote(target, WINDOW, WINDOW))
    out["in-actor  asyncio.gather per 1,000"] = {"throughput": actors.get(caller.run_gather.remote(target, n_pipe, WINDOW))}
    out["async driver  asyncio.gather per 1,000"] = {"throughput": async_tput}
    driver_get_windows(target, WINDOW)
    out["sync driver  actors.get([...]) per 1,000"] = {"throughput": driver_get_windows(target, n_pipe)}
    return out


# -- report -----------------------------------------------------------------------------
def report(raw: dict[str, dict[str, float]], zs: dict[str, dict[str, float]]) -> dict[str, Any]:
    curve, plain = raw["raw CURVE ping-pong"]["median_us"], raw["raw plain ping-pong"]["median_us"]
    print(f"\nSequential round trip ({len(PAYLOAD)} B payload; target: <= {RTT_FACTOR:g}x raw ping-pong)")
    print(f"  {'measurement':46} {'median us':>10} {'p99 us':>9} {'xCURVE':>7} {'xplain':>7}  target")
    targets: dict[str, Any] = {}
    for name, fig in {**raw, **zs}.items():
        if "median_us" not in fig:
            continue
        row = f"  {name:46} {fig['median_us']:10.1f} {fig['p99_us']:9.1f}"
        if not name.startswith("raw"):
            r_curve, r_plain = fig["median_us"] / curve, fig["median_us"] / plain
            verdict = "PASS" if r_curve <= RTT_FACTOR else "MISS"
            fig.update(ratio_vs_curve=r_curve, ratio_vs_plain=r_plain)
            targets[f"rtt: {name}"] = verdict
            row += f" {r_curve:6.2f}x {r_plain:6.2f}x  {verdict}"
        print(row)
    print(f"\nThroughput with {WINDOW:,} in flight (target: >= {THROUGHPUT_TARGET:,.0f} calls/s)")
    print(f"  {'measurement':46} {'msgs/s':>10} {'x target':>9}  target")
    for name, fig in {**raw, **zs}.items():
        if "throughput" not in fig:
            continue
        tput = fig["throughput"]
        row = f"  {name:46} {tput:10,.0f}"
        if not name.startswith("raw"):
            verdict = "PASS" if tput >= THROUGHPUT_TARGET else "MISS"
            targets[f"throughput: {name}"] = verdict
            row += f" {tput / THROUGHPUT_TARGET:8.2f}x  {verdict}"
        print(row)
    main_rtt = targets["rtt: in-actor  await target.noop.remote()"]
    main_tput = targets["throughput: in-actor  sliding window of refs"]
    print(f"\nProject targets (in-actor path, as the serving layer calls): round trip <= {RTT_FACTOR:g}x raw CURVE "
          f"ping-pong: {main_rtt}; >= {THROUGHPUT_TARGET:,.0f} calls/s with {WINDOW:,} in flight: {main_tput}")
    return targets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer iterations (a smoke test)")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = ap.parse_args()
    n_seq, n_pipe = (300, 3_000) if args.quick else (2_000, 20_000)
    os.environ.setdefault("ZEROSERVE_QUIET", "1")
    server_pub, server_sec = zmq.curve_keypair()
    client_pub, client_sec = zmq.curve_keypair()
    parent_end, child_end = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(target=echo_server, args=(child_end, server_sec), daemon=True)
    raw: dict[str, dict[str, float]] = {}
    try:
        server.start()
        child_end.close()
        if not parent_end.poll(30):
            raise RuntimeError("the echo server did not report its ports within 30 s")
        plain_port, curve_port = parent_end.recv()
        print(f"running ({'quick' if args.quick else 'full'}: {n_seq:,} sequential calls, {n_pipe:,} pipelined)...",
              file=sys.stderr)
        raw["raw plain ping-pong"] = uvloop.run(raw_client(plain_port, None, n_seq, n_pipe))
        raw["raw CURVE ping-pong"] = uvloop.run(
            raw_client(curve_port, (server_pub, client_pub, client_sec), n_seq, n_pipe))
        actors.init()
        zs = run_zeroserve(n_seq, n_pipe)
    finally:
        actors.shutdown()
        parent_end.close()  # the server stops on EOF
        if server.pid is not None:
            server.join(5)
        if server.is_alive():
            server.terminate()
            server.join(5)
    targets = report(raw, zs)
    if args.json:
        config = {"quick": args.quick, "sequential_calls": n_seq, "pipelined_calls": n_pipe, "window": WINDOW,
                  "payload_bytes": len(PAYLOAD), "python": sys.version.split()[0], "zmq": zmq.zmq_version(),
                  "pyzmq": zmq.__version__, "cpus": os.cpu_count()}
        with open(args.json, "w") as f:
            json.dump({"config": config, "raw": raw, "zeroserve": zs, "targets": targets}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
