"""Probing a runtime endpoint: reachable? does it accept our token? is it answering?

A blocking, one-shot check for command-line tools and clear start-up errors. It watches
the CURVE handshake on a socket monitor, so a wrong token (the handshake fails) is told
apart from a host that does not answer (no connection) and from a process that is there
but busy or stopped (the connection is up, but the handshake, which needs the process's
own authentication handler, or the answer to our ping does not come in time).
"""

from __future__ import annotations

import time
from enum import Enum

import zmq
from zmq.utils.monitor import recv_monitor_message

from ._security import CurveKeys
from ._wire import Kind, Message, encode

__all__ = ["probe", "ProbeResult", "PROBE_OK", "PROBE_REFUSED", "PROBE_UNREACHABLE", "PROBE_BUSY"]


class ProbeResult(str, Enum):
    OK = "ok"  # it answered a ping with our token
    REFUSED = "refused"  # it is there but rejects our token
    UNREACHABLE = "unreachable"  # nothing answered in time
    BUSY = "busy"  # it took the connection but did not finish the handshake or answer in time


PROBE_OK = ProbeResult.OK
PROBE_REFUSED = ProbeResult.REFUSED
PROBE_UNREACHABLE = ProbeResult.UNREACHABLE
PROBE_BUSY = ProbeResult.BUSY
_FAILED = {zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL}


def probe(address: str, token: str, timeout: float = 3.0) -> ProbeResult:
    """PROBE_OK if `address` answers a ping with our token, PROBE_REFUSED if it is there
    but rejects the token, PROBE_BUSY if it took the connection but neither finished the
    handshake nor answered within `timeout`, PROBE_UNREACHABLE if nothing answered."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    CurveKeys.from_token(token).make_client(sock)
    monitor = sock.get_monitor_socket()
    try:
        sock.connect(address)
        sock.send_multipart([bytes(f) for f in encode([Message(Kind.REQUEST, 1, b"rt/ping", b"")])])
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        connected = shaken = False
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            for s, _ in poller.poll(int(left * 1000) + 1):
                if s is sock:
                    return PROBE_OK
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_CONNECTED:
                    connected = True
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    shaken = True
                elif event in _FAILED or (connected and not shaken and event == zmq.EVENT_DISCONNECTED):
                    return PROBE_REFUSED
        return PROBE_BUSY if connected else PROBE_UNREACHABLE
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)
        ctx.term()
