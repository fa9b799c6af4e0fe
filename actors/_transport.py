"""The process's sockets: one ROUTER for inbound requests, one cached DEALER per peer.

All socket I/O runs on the owning event loop, driven by the sockets' file descriptors
(`loop.add_reader`), with no thread hop. Outgoing messages are queued per destination and
flushed once per loop iteration as one multipart batch (see `_wire.py`), which amortises
the per-message cost of ZeroMQ and of CURVE.

ZeroMQ's fd is edge-like: readiness is signalled once per change, so a reader drains until
EAGAIN (or a fairness budget, then reschedules itself), and every send is followed by a
check of `EVENTS` since a send can consume the edge of a pending receive.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from typing import cast

import zmq

from ._metrics_runtime import COUNTERS, RuntimeCounters, track_transport
from ._security import CurveKeys, ZapHandler
from ._serialization import dumps
from ._wire import INLINE_LIMIT, Kind, Message, WireError, decode, encode, extra_frames
from .exceptions import MessageTooLargeError

__all__ = ["Transport"]

log = logging.getLogger(__name__)
_DRAIN_BUDGET = 256
# Plain ints and the Cython methods: pyzmq's Python-level sugar (enum conversions,
# argument checks) cost more than the send itself for small frames.
_EVENTS, _POLLIN, _RCVMORE, _FD = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE), int(zmq.FD)
_NOBLOCK, _NOBLOCK_MORE = int(zmq.NOBLOCK), int(zmq.NOBLOCK | zmq.SNDMORE)
_raw_send = zmq.backend.Socket.send
_raw_recv = zmq.backend.Socket.recv
# The options read here (EVENTS, FD) are ints; pyzmq's stubs say int | bytes for all.
_get_int = cast("Callable[[zmq.Socket, int], int]", zmq.backend.Socket.get)
_MAX_BATCH = 4096
_MONITORED = int(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
_HANDSHAKE_DONE = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_EVENT_ID = struct.Struct("=H")  # a monitor event's first frame starts with its u16 id

RequestHandler = Callable[[bytes, Message], None]
ReplyHandler = Callable[[str, Message], None]
UndeliverableHandler = Callable[[str, list[Message], Exception], None]
LostHandler = Callable[[str], None]
_HWM = 10_000  # batches queued per peer before sends fail (bounds memory for dead peers)


class _Outbox:
    """Messages queued for one destination: a peer's DEALER (`address` set) or one
    requester behind the ROUTER (`prefix` is its identity frame)."""

    __slots__ = ("address", "prefix", "queue", "sock")

    def __init__(self, sock: zmq.Socket, prefix: list[bytes], address: str | None) -> None:
        self.sock = sock
        self.queue: list[Message] = []
        self.prefix = prefix
        self.address = address


_ANY_ADDRESS = frozenset({"0.0.0.0", "*", "::"})


class Transport:
    """Sockets of one process. `on_request(identity, msg)` gets inbound REQUEST/ONEWAY/CANCEL
    messages; `on_reply(address, msg)` gets REPLY/ERROR messages from a peer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        keys: CurveKeys,
        host: str,
        on_request: RequestHandler,
        on_reply: ReplyHandler,
        max_message_bytes: int,
        port: int = 0,
        on_undeliverable: UndeliverableHandler | None = None,
        on_lost: LostHandler | None = None,
        advertise: str | None = None,
    ) -> None:
        if advertise is None and host in _ANY_ADDRESS:
            raise ValueError(f"a socket bound to {host} needs the address others reach it at (advertise=...)")
        self._loop = loop
        self._keys = keys
        self._on_request = on_request
        self._on_reply = on_reply
        self._on_undeliverable = on_undeliverable
        self._on_lost = on_lost
        self._monitors: dict[str, zmq.Socket] = {}
        self._reached: set[str] = set()  # peers whose current connection completed a handshake
        self.max_message_bytes = max_message_bytes
        self._ctx = zmq.Context()
        self._zap = ZapHandler(self._ctx, keys)
        loop.add_reader(self._zap.fd, self._zap.drain)
        self._router = self._socket(zmq.ROUTER)
        keys.make_server(self._router)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        if port:
            self._router.bind(f"tcp://{host}:{port}")
        else:
            port = self._router.bind_to_random_port(f"tcp://{host}")
        # What peers connect to: the bind address, or the routable address (IP or DNS
        # name) given for it (a pod binds 0.0.0.0 and is reached at its pod IP).
        self.address = f"tcp://{advertise or host}:{port}"
        self._dealers: dict[str, zmq.Socket] = {}
        self._outboxes: dict[object, _Outbox] = {}
        self._dirty: list[_Outbox] = []  # outboxes with something queued
        self._flush_scheduled = False
        self._closed = False
        loop.add_reader(_get_int(self._router, _FD), self._drain_router)
        loop.call_soon(self._drain_router)  # see the monitor note in _dealer
        loop.call_soon(self._zap.drain)
        track_transport(self)

    def open_connections(self) -> int:
        """Peers this transport holds a connection to (for the runtime's metrics)."""
        return len(self._dealers)

    # -- sockets -----------------------------------------------------------------------
    def _socket(self, kind: int) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.linger = 0
        sock.sndhwm = _HWM
        sock.rcvhwm = _HWM
        sock.maxmsgsize = self.max_message_bytes
        return sock

    def _dealer(self, address: str) -> zmq.Socket:
        sock = self._dealers.get(address)
        if sock is None:
            if self._closed:
                raise ConnectionError("the transport is closed")
            sock = self._socket(zmq.DEALER)
            self._keys.make_client(sock)
            sock.reconnect_ivl = 100
            sock.reconnect_ivl_max = 2000
            if self._on_lost is not None:
                monitor = sock.get_monitor_socket(_MONITORED)
                self._monitors[address] = monitor
                self._loop.add_reader(_get_int(monitor, _FD), self._drain_monitor, address, monitor)
                # Process the commands the monitor's set-up left in its mailbox; until
                # then its fd may never signal again (ZeroMQ's fd is edge-like).
                self._loop.call_soon(self._drain_monitor, address, monitor)
            sock.connect(address)
            self._dealers[address] = sock
            self._loop.add_reader(_get_int(sock, _FD), self._drain_dealer, address, sock)
        return sock

    def _drain_monitor(self, address: str, monitor: zmq.Socket) -> None:
        """Read a peer connection's events. A handshake done means what is sent from now on
        can reach the peer. A dropped connection loses what was written to it (ZeroMQ does
        not resend), so the peer is closed and its callers told at once."""
        lost = False
        while not monitor.closed and _get_int(monitor, _EVENTS) & _POLLIN:
            event = _EVENT_ID.unpack_from(monitor.recv_multipart(zmq.NOBLOCK)[0])[0]
            if event == _HANDSHAKE_DONE:
                self._reached.add(address)
            else:
                lost = True
        if lost and self._monitors.get(address) is monitor:
            self.close_peer(address)
            assert self._on_lost is not None
            self._on_lost(address)

    def reached(self, address: str) -> bool:
        """Whether anything sent to `address` since its connection was (re)opened may have
        been delivered: False only if that connection has never completed a handshake, so
        every request sent on it is still queued here. (Its monitor is read first: ZeroMQ
        queues the handshake event before it sends a byte over the connection.)"""
        monitor = self._monitors.get(address)
        if monitor is None:
            return True  # not watched, or already closed: it may have
        self._drain_monitor(address, monitor)
        return address in self._reached or self._monitors.get(address) is not monitor

    def close_peer(self, address: str) -> None:
        """Forget a peer (it is known dead): close its socket, drop its queued sends."""
        self._reached.discard(address)
        sock = self._dealers.pop(address, None)
        if sock is not None:
            self._outboxes.pop(address, None)
            self._loop.remove_reader(_get_int(sock, _FD))
            monitor = self._monitors.pop(address, None)
            if monitor is not None:
                self._loop.remove_reader(_get_int(monitor, _FD))
                sock.disable_monitor()
                monitor.close(0)
            sock.close(0)

    # -- sending -----------------------------------------------------------------------
    def _check_size(self, msg: Message) -> None:
        limit = self.max_message_bytes
        if limit <= 0:
            return
        if len(msg.payload) > limit or (msg.buffers and any(memoryview(b).nbytes > limit for b in msg.buffers)):
            raise MessageTooLargeError(
                f"a message part is larger than max_message_bytes={limit}; raise "
                "ZEROSERVE_MAX_MESSAGE_BYTES on every node or send smaller arguments"
            )

    def send(self, address: str, msg: Message) -> None:
        """Queue a message to the peer listening at `address`."""
        self._check_size(msg)
        box = self._outboxes.get(address)
        if box is None:
            box = self._outboxes[address] = _Outbox(self._dealer(address), [], address)
        self._enqueue(box, msg)

    def reply(self, identity: bytes, msg: Message) -> None:
        """Queue a message back to the peer whose request arrived with `identity`."""
        try:
            self._check_size(msg)
        except MessageTooLargeError as e:
            payload, _ = dumps(e)
            msg = Message(Kind.ERROR, msg.req_id, b"", payload)
        key = (identity,)
        box = self._outboxes.get(key)
        if box is None:
            box = self._outboxes[key] = _Outbox(self._router, [identity], None)
        self._enqueue(box, msg)

    def _enqueue(self, box: _Outbox, msg: Message) -> None:
        if not box.queue:
            self._dirty.append(box)
        box.queue.append(msg)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        router_sent = False
        for box in dirty:
            queue, box.queue = box.queue, []
            if box.address is None:
                self._outboxes.pop(tuple(box.prefix), None)  # reply outboxes live for one flush
                router_sent = True
            if box.sock.closed:
                continue
            for i in range(0, len(queue), _MAX_BATCH):
                batch = queue[i : i + _MAX_BATCH]
                try:
                    _send(box.sock, box.prefix + encode(batch))
                except zmq.ZMQError as e:
                    # Replies: the requester is gone (EHOSTUNREACH), nobody is left to answer.
                    # Requests: the peer's queue is full (EAGAIN); their callers must hear of it.
                    log.debug("dropped a batch to %r: %s", box.address or box.prefix, e)
                    if box.address is not None and self._on_undeliverable is not None:
                        self._on_undeliverable(box.address, batch, e)
            # A send can consume the fd's edge for a message already waiting: look.
            if box.address is not None and not box.sock.closed and _get_int(box.sock, _EVENTS) & _POLLIN:
                self._loop.call_soon(self._drain_dealer, box.address, box.sock)
        if router_sent and not self._router.closed and _get_int(self._router, _EVENTS) & _POLLIN:
            self._loop.call_soon(self._drain_router)

    # -- receiving ---------------------------------------------------------------------
    def _drain_router(self) -> None:
        sock = self._router
        for _ in range(_DRAIN_BUDGET):
            if sock.closed or not _get_int(sock, _EVENTS) & _POLLIN:
                return
            identity = _raw_recv(sock, _NOBLOCK, True)
            messages = _recv_batch(sock, identity, COUNTERS)
            for msg in messages:
                self._on_request(identity, msg)
        self._loop.call_soon(self._drain_router)

    def _drain_dealer(self, address: str, sock: zmq.Socket) -> None:
        for _ in range(_DRAIN_BUDGET):
            if sock.closed or not _get_int(sock, _EVENTS) & _POLLIN:
                return
            messages = _recv_batch(sock, address, COUNTERS)
            for msg in messages:
                self._on_reply(address, msg)
        self._loop.call_soon(self._drain_dealer, address, sock)

    # -- lifecycle ---------------------------------------------------------------------
    def close(self, linger_s: float = 0.0) -> None:
        """Close every socket. Replies still queued are dropped, unless `linger_s` gives
        them that long to leave (a worker exiting after a drain)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        for address in list(self._dealers):
            self.close_peer(address)
        for sock_fd in (_get_int(self._router, _FD), self._zap.fd):
            self._loop.remove_reader(sock_fd)
        self._router.close(int(linger_s * 1000))
        self._zap.close()
        self._ctx.term()


def _send(sock: zmq.Socket, frames: list) -> None:
    """Send one multipart message: small frames copied (cheaper than zero-copy
    bookkeeping), large ones handed to ZeroMQ without a copy. Counts the bytes."""
    last = len(frames) - 1
    sent = 0
    for i, frame in enumerate(frames):
        flags = _NOBLOCK_MORE if i < last else _NOBLOCK
        if type(frame) is bytes:
            n = len(frame)
            copy = n <= INLINE_LIMIT
        else:
            n = memoryview(frame).nbytes
            copy = False
        _raw_send(sock, frame, flags, copy)
        sent += n
    COUNTERS.bytes_sent += sent


def _recv_batch(sock: zmq.Socket, peer: object, counters: RuntimeCounters) -> list[Message]:
    """Receive the rest of one batch: header and inline frame as bytes, the large
    frames the header announces as zero-copy zmq.Frames. A malformed batch is
    drained to its end and dropped. Counts the bytes."""
    frames: list = [_raw_recv(sock, _NOBLOCK, True)]
    try:
        if not sock.get(_RCVMORE):
            raise WireError("a batch has at least a header and an inline frame")
        frames.append(_raw_recv(sock, _NOBLOCK, True))
        received = len(frames[0]) + len(frames[1])
        for _ in range(extra_frames(frames[0])):
            if not sock.get(_RCVMORE):
                raise WireError("fewer frames than the header announces")
            frame = _raw_recv(sock, _NOBLOCK, False)
            received += len(frame)
            frames.append(frame)
        counters.bytes_received += received
        if sock.get(_RCVMORE):
            raise WireError("more frames than the header announces")
        return decode(frames)
    except WireError as e:
        while sock.get(_RCVMORE):
            sock.recv(zmq.NOBLOCK, copy=False)
        log.warning("dropped a malformed batch from %r: %s", peer, e)
        return []
