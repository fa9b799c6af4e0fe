"""A blocking call to the head from the runtime's own event-loop thread.

Blocking runtime calls made from another thread hand their work to the loop and wait
(`Runtime.run_threadsafe`). On the loop's thread that would deadlock, so a few quick
lookups that Ray lets async code make synchronously (`actors.get_actor`) go to the head
over a socket of their own instead: one DEALER, CURVE-authenticated with the cluster's
keys, one request, its reply, closed. The loop is blocked for that one round trip, as
Ray's own blocking lookups block an async actor.

`head_blocking(rt, lambda head: head.get_named_actor(...))` makes such a call through the
typed `HeadClient` (the same methods as `rt.head`), whose transport here never suspends.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import zmq

from ._errors import decode_error
from ._head_client import HeadClient
from ._runtime import Runtime
from ._serialization import dumps, loads
from ._wire import Kind, Message, decode, encode
from .exceptions import ClusterUnavailableError

__all__ = ["head_blocking"]

T = TypeVar("T")
_ids = itertools.count(1)
_UNBOUNDED_S = 24 * 3600.0  # a head call made with timeout=None


def head_blocking(rt: Runtime, call: Callable[[HeadClient], Coroutine[Any, Any, T]]) -> T:
    """`call(head)` on a `HeadClient` answered without the event loop (blocking this thread)."""

    async def send(method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        return call_head_blocking(rt, method, args, _UNBOUNDED_S if timeout is None else timeout)

    coro = call(HeadClient(send))
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a blocking head call suspended: its transport must answer without the event loop")


def call_head_blocking(rt: Runtime, method: str, args: tuple[Any, ...], timeout_s: float = 30.0) -> Any:
    """`rt.head.<method>(*args)`, answered without the event loop (ClusterUnavailableError after `timeout_s`)."""
    if not rt.head_address:
        raise ClusterUnavailableError("this process does not know the head's address")
    payload, buffers = dumps((args, None))
    req_id = next(_ids)
    sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
    try:
        sock.linger = 0
        rt.keys.make_client(sock)
        sock.connect(rt.head_address)
        request = Message(Kind.REQUEST, req_id, f"head/{method}".encode(), payload, buffers)
        sock.send_multipart([bytes(f) if not isinstance(f, bytes) else f for f in encode([request])])
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1, zmq.POLLIN):
                continue
            for msg in decode(sock.recv_multipart(copy=True)):
                if msg.req_id != req_id:
                    continue
                if msg.kind == Kind.REPLY:
                    return loads(msg.payload, msg.buffers) if len(msg.payload) else None
                raise decode_error(msg.payload, msg.buffers)
        raise ClusterUnavailableError(f"the head at {rt.head_address} did not answer {method} within {timeout_s}s")
    finally:
        sock.close(0)
