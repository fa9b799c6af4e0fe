"""Security baseline: nothing from a peer without the cluster token is ever unpickled.

A pickle that creates a file when unpickled is sent, in the runtime's own wire format,
from raw pyzmq sockets to every listening socket of a cluster (head, agent, worker,
driver). A control sends the same bytes with the right keys to show the payload is live.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import stat
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

import actors
from actors._security import CurveKeys
from actors._wire import Kind, Message, encode
from actors.system import Runtime, current_runtime, local_cluster

pytestmark = pytest.mark.usefixtures("cluster")

_REFUSED = {
    zmq.EVENT_DISCONNECTED,
    zmq.EVENT_HANDSHAKE_FAILED_AUTH,
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL,
}


class _CreatesFile:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _evil_frames(path: Path, route: bytes) -> list[bytes]:
    payload = pickle.dumps((((_CreatesFile(str(path)),), None)), protocol=5)
    return [bytes(f) for f in encode([Message(Kind.REQUEST, 1, route, payload)])]


@actors.remote
class Target:
    def incr(self, x: object = 1) -> str:
        return type(x).__name__


def _listening_sockets() -> dict[str, tuple[str, bytes]]:
    rt = current_runtime()
    t = Target.remote()
    actors.get(t.incr.remote())
    info = rt.run_threadsafe(lambda: rt.head.get_actor_info(t.actor_id))
    return {
        "head": (rt.head_address, b"head/nodes"),
        "agent": (actors.nodes()[0]["agent_address"], b"agent/workers"),
        "worker": (info.address, b"a/incr"),
        "driver": (rt.address, b"rt/ping"),
    }


def _attacker(ctx: zmq.Context, kind: str, token: str) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    if kind == "wrong-token":
        CurveKeys.from_token(token + "-guess").make_client(sock)
    elif kind == "stolen-server-key":
        public, secret = zmq.curve_keypair()
        sock.curve_serverkey = CurveKeys.from_token(token).server_public
        sock.curve_publickey, sock.curve_secretkey = public, secret
    elif kind == "right-token":
        CurveKeys.from_token(token).make_client(sock)
    return sock  # "no-curve": the NULL mechanism


def _outcome(monitor: zmq.Socket, timeout_ms: int = 5000) -> int:
    """The first decisive handshake event on the attacker's socket."""
    poller = zmq.Poller()
    poller.register(monitor, zmq.POLLIN)
    while poller.poll(timeout_ms):
        event = recv_monitor_message(monitor)["event"]
        if event in _REFUSED or event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return event
    pytest.fail("no handshake outcome within 5 s")


@pytest.mark.parametrize("attacker", ["no-curve", "wrong-token", "stolen-server-key"])
def test_unauthenticated_peers_are_refused_before_anything_is_unpickled(tmp_path: Path, attacker: str) -> None:
    rt = current_runtime()
    ctx = zmq.Context()
    try:
        for name, (address, route) in _listening_sockets().items():
            marker = tmp_path / f"{attacker}-{name}"
            sock = _attacker(ctx, attacker, rt.token)
            monitor = sock.get_monitor_socket()
            sock.connect(address)
            sock.send_multipart(_evil_frames(marker, route))
            event = _outcome(monitor)
            assert event != zmq.EVENT_HANDSHAKE_SUCCEEDED, f"{attacker} authenticated to the {name}"
            sock.disable_monitor()
            monitor.close(0)
            sock.close(0)
            # The process keeps serving, and the payload never ran.
            assert actors.nodes()[0]["alive"]
            assert not marker.exists(), f"the {name} unpickled a payload from an unauthenticated peer"
        t = Target.remote()
        assert actors.get(t.incr.remote()) == "int"
    finally:
        ctx.term()


def test_control_the_same_payload_runs_with_the_right_token(tmp_path: Path) -> None:
    """Shows the attack test can fail: with the key, the worker does unpickle it."""
    rt = current_runtime()
    address, route = _listening_sockets()["worker"]
    marker = tmp_path / "control"
    ctx = zmq.Context()
    try:
        sock = _attacker(ctx, "right-token", rt.token)
        sock.connect(address)
        sock.send_multipart(_evil_frames(marker, route))
        assert sock.poll(10_000), "no reply from the worker"
        sock.recv_multipart()
        assert marker.exists()
        sock.close(0)
    finally:
        ctx.term()


def test_raw_tcp_garbage_does_not_hurt_any_process() -> None:
    for _name, (address, _route) in _listening_sockets().items():
        host, port = address[len("tcp://"):].rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(b"\xff" + os.urandom(4096) + b"GET / HTTP/1.1\r\n\r\n")
    t = Target.remote()
    assert actors.get(t.incr.remote(), timeout=10) == "int"


def test_token_file_is_private() -> None:
    cluster = local_cluster()
    assert cluster is not None
    mode = stat.S_IMODE(os.stat(cluster.token_file).st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(cluster.session.path).st_mode) == 0o700


def test_call_over_the_message_limit_fails_at_the_caller() -> None:
    async def main() -> None:
        rt = Runtime(token="t", node_ip="127.0.0.1", head_address=None, role="test", max_message_bytes=1 << 20)
        try:
            with pytest.raises(actors.MessageTooLargeError, match="max_message_bytes"):
                await rt.call(rt.address, b"rt/ping", (b"x" * (2 << 20),))
        finally:
            rt.close()

    asyncio.run(main())


def test_oversized_message_is_refused_and_the_receiver_keeps_serving() -> None:
    """An authenticated peer over the receiver's ZMQ_MAXMSGSIZE is cut off; no harm."""
    seen: list[int] = []

    class Sink:
        def handle(self, call) -> None:
            seen.append(len(call.payload))
            call.reply("ok")

        def cancel(self, identity: bytes, req_id: int) -> None:
            pass

    async def main() -> None:
        rt = Runtime(token="tok", node_ip="127.0.0.1", head_address=None, role="test", max_message_bytes=1 << 20)
        rt.register("sink", Sink())
        ctx = zmq.Context()
        try:
            big = ctx.socket(zmq.DEALER)
            CurveKeys.from_token("tok").make_client(big)
            monitor = big.get_monitor_socket()
            big.connect(rt.address)
            big.send_multipart([bytes(f) for f in encode([Message(Kind.REQUEST, 1, b"sink/x", b"y" * (3 << 20))])])
            loop = asyncio.get_running_loop()
            while True:
                event = await loop.run_in_executor(None, _outcome, monitor)
                if event in _REFUSED:
                    break
            big.close(0)
            monitor.close(0)
            reply = await rt.call(rt.address, b"sink/x", ("small",))
            assert reply == "ok"
            assert seen and max(seen) < (1 << 20)
        finally:
            rt.close()
            ctx.term()

    asyncio.run(main())
