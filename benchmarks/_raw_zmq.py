"""The raw baseline of handle-call benchmarks: a blocking pyzmq DEALER/ROUTER ping-pong
between two processes over loopback TCP, CURVE on (keys derived as the runtime derives them).

`raw_round_trip_rate(n)` starts an echo ROUTER in a child process (this file run as a
script), sends `n` small requests one at a time from a blocking DEALER in this process,
and returns round trips per second. The echo is what a handle call cannot beat: one request
frame out, one reply frame back, no serialization, no routing, no event loop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from actors.system import CurveKeys, new_token

__all__ = ["raw_round_trip_rate"]


def _echo(token: str) -> None:
    keys = CurveKeys.from_token(token)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    sock.curve_server = True  # no ZAP handler in this process: CURVE's handshake alone
    sock.curve_secretkey = keys.server_secret
    sock.curve_publickey = keys.server_public
    print(sock.bind_to_random_port("tcp://127.0.0.1"), flush=True)
    while True:
        frames = sock.recv_multipart()
        if frames[1] == b"stop":
            break
        sock.send_multipart(frames)
    sock.close()
    ctx.term()


def raw_round_trip_rate(n: int, warmup: int = 200) -> float:
    """Blocking DEALER -> ROUTER echo round trips per second, two processes, CURVE on."""
    token = new_token()
    keys = CurveKeys.from_token(token)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), token], stdout=subprocess.PIPE, text=True)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    keys.make_client(sock)
    try:
        assert child.stdout is not None
        sock.connect(f"tcp://127.0.0.1:{int(child.stdout.readline())}")
        msg = b"x" * 64
        for _ in range(warmup):
            sock.send(msg)
            sock.recv()
        t0 = time.perf_counter()
        for _ in range(n):
            sock.send(msg)
            sock.recv()
        rate = n / (time.perf_counter() - t0)
        sock.send(b"stop")
        return rate
    finally:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        sock.close()
        ctx.term()


if __name__ == "__main__":
    _echo(sys.argv[1])
