"""CURVE keys derived from the cluster token, and the ZAP handler that enforces them.

Every process of a cluster shares one token. From it we derive two Curve25519 key pairs:
the *server* pair, used by every ROUTER, and the *client* pair, used by every DEALER. A
peer without the token knows neither secret: its handshake fails against the server key,
and the ZAP handler additionally refuses any client public key but the derived one, so no
byte of an unauthenticated peer ever reaches the unpickler.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass

import zmq
from zmq.utils import z85

__all__ = ["CurveKeys", "new_token", "ZapHandler", "ZAP_DOMAIN"]

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = b"zeroserve"
log = logging.getLogger(__name__)


def new_token() -> str:
    return secrets.token_hex(24)


def _keypair(token: str, role: bytes) -> tuple[bytes, bytes]:
    seed = hashlib.sha256(b"zeroserve-curve-" + role + b"\0" + token.encode()).digest()
    secret = z85.encode(seed)
    return zmq.curve_public(secret), secret


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The two key pairs of a cluster, all derived from its token."""

    server_public: bytes
    server_secret: bytes
    client_public: bytes
    client_secret: bytes

    @classmethod
    def from_token(cls, token: str) -> "CurveKeys":
        if not token:
            raise ValueError("the cluster token must be a non-empty string")
        sp, ss = _keypair(token, b"server")
        cp, cs = _keypair(token, b"client")
        return cls(sp, ss, cp, cs)

    def make_server(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_secretkey = self.server_secret
        sock.curve_publickey = self.server_public
        sock.zap_domain = ZAP_DOMAIN

    def make_client(self, sock: zmq.Socket) -> None:
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.client_public
        sock.curve_secretkey = self.client_secret


class ZapHandler:
    """Answers libzmq's authentication requests for every socket of one context.

    Runs on the process's event loop (handshakes are not on the hot path). Accepts a
    CURVE peer only if its public key is the cluster's client key; everything else,
    NULL and PLAIN included, is refused.
    """

    def __init__(self, ctx: zmq.Context, keys: CurveKeys) -> None:
        self._allowed = z85.decode(keys.client_public)
        self._sock = ctx.socket(zmq.ROUTER)
        self._sock.linger = 0
        self._sock.bind(ZAP_ENDPOINT)
        self.refused = 0

    @property
    def fd(self) -> int:
        return self._sock.getsockopt(zmq.FD)

    def drain(self) -> None:
        """Answer every pending request; call when the socket's fd is readable. (A drain
        scheduled before `close()` finds the socket closed: nothing is left to answer.)"""
        while not self._sock.closed and self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            frames = self._sock.recv_multipart(zmq.NOBLOCK)
            self._sock.send_multipart(self._answer(frames))

    def _answer(self, frames: list[bytes]) -> list[bytes]:
        # [routing id, empty, version, request id, domain, address, identity, mechanism, creds...]
        ident, request_id = frames[0], frames[3] if len(frames) > 3 else b""
        ok = (
            len(frames) >= 9
            and frames[2] == b"1.0"
            and frames[4] == ZAP_DOMAIN
            and frames[7] == b"CURVE"
            and frames[8] == self._allowed
        )
        if not ok:
            self.refused += 1
            peer = frames[5].decode(errors="replace") if len(frames) > 5 else "?"
            log.warning("refused an unauthenticated peer from %s", peer)
        code, text = (b"200", b"OK") if ok else (b"400", b"refused: wrong cluster token")
        return [ident, b"", b"1.0", request_id, code, text, b"cluster" if ok else b"", b""]

    def close(self) -> None:
        self._sock.close(0)
