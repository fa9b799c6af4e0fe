"""The frame codec: many logical messages packed into one ZeroMQ multipart message.

A batch on the wire is::

    frame 0   header: u16 count, then per message <kind u8, flags u8, req_id u64,
              route_len u16, payload_len u32, nbufs u16>
    frame 1   the small routes and payloads of all messages, concatenated
    frame 2.. large payloads (flag PAYLOAD_OWN_FRAME) and out-of-band pickle buffers,
              in message order, each its own frame so nothing large is copied

Invariants: decode(encode(msgs)) == msgs; a malformed batch raises `WireError` and never
reads past the frames it was given.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Kind", "Message", "WireError", "encode", "decode", "extra_frames", "INLINE_LIMIT"]

_COUNT = struct.Struct("<H")
_ENTRY = struct.Struct("<BBQHIH")
PAYLOAD_OWN_FRAME = 1
INLINE_LIMIT = 16 * 1024
MAX_BATCH = 0xFFFF
# A frame: bytes, a memoryview, a zmq.Frame... anything with the buffer protocol (which
# has no type before Python 3.12's collections.abc.Buffer).
Frame = Any


class Kind:
    """Message kinds. REQUEST expects a REPLY or ERROR with the same req_id."""

    REQUEST = 1
    REPLY = 2
    ERROR = 3
    ONEWAY = 4
    CANCEL = 5


class WireError(ValueError):
    """A batch that does not follow the frame layout above."""


@dataclass(slots=True)
class Message:
    kind: int
    req_id: int
    route: bytes
    payload: bytes | memoryview
    buffers: Sequence[Frame] = ()


def encode(messages: Sequence[Message]) -> list[Frame]:
    """Pack messages into the frames of one multipart send."""
    if not 0 < len(messages) <= MAX_BATCH:
        raise WireError(f"a batch holds 1..{MAX_BATCH} messages, got {len(messages)}")
    header = [_COUNT.pack(len(messages))]
    inline: list[bytes | memoryview] = []
    extra: list[Frame] = []
    for m in messages:
        flags = 0
        n = len(m.payload)
        inline.append(m.route)
        if n > INLINE_LIMIT:
            flags = PAYLOAD_OWN_FRAME
            extra.append(m.payload)
        else:
            inline.append(m.payload)
        header.append(_ENTRY.pack(m.kind, flags, m.req_id, len(m.route), n, len(m.buffers)))
        extra.extend(m.buffers)
    return [b"".join(header), b"".join(inline), *extra]


def extra_frames(header: bytes) -> int:
    """How many frames follow the inline frame, read from a batch header."""
    if len(header) < _COUNT.size:
        raise WireError("header frame too short")
    (count,) = _COUNT.unpack_from(header, 0)
    if len(header) != _COUNT.size + count * _ENTRY.size:
        raise WireError("header length does not match its message count")
    n = 0
    for i in range(count):
        _, flags, _, _, _, nbufs = _ENTRY.unpack_from(header, _COUNT.size + i * _ENTRY.size)
        n += (flags & PAYLOAD_OWN_FRAME) + nbufs
    return n


def decode(frames: Sequence[Frame]) -> list[Message]:
    """Unpack the frames of one multipart receive into messages.

    Frames may be bytes or objects with the buffer protocol (zmq.Frame); large
    payloads and buffers are returned as they came, without copying.
    """
    if len(frames) < 2:
        raise WireError("a batch has at least a header and an inline frame")
    header = memoryview(frames[0])
    inline = memoryview(frames[1])
    if len(header) < _COUNT.size:
        raise WireError("header frame too short")
    (count,) = _COUNT.unpack_from(header, 0)
    if len(header) != _COUNT.size + count * _ENTRY.size:
        raise WireError("header length does not match its message count")
    out: list[Message] = []
    pos = 0
    frame_index = 2
    nframes = len(frames)
    for i in range(count):
        kind, flags, req_id, rlen, plen, nbufs = _ENTRY.unpack_from(header, _COUNT.size + i * _ENTRY.size)
        if pos + rlen > len(inline):
            raise WireError("route runs past the inline frame")
        route = bytes(inline[pos : pos + rlen])
        pos += rlen
        if flags & PAYLOAD_OWN_FRAME:
            if frame_index >= nframes:
                raise WireError("missing payload frame")
            payload = frames[frame_index]
            frame_index += 1
            if len(memoryview(payload)) != plen:
                raise WireError("payload frame length mismatch")
        else:
            if pos + plen > len(inline):
                raise WireError("payload runs past the inline frame")
            payload = inline[pos : pos + plen]
            pos += plen
        if frame_index + nbufs > nframes:
            raise WireError("missing buffer frames")
        buffers = tuple(frames[frame_index : frame_index + nbufs])
        frame_index += nbufs
        out.append(Message(kind, req_id, route, payload, buffers))
    if pos != len(inline) or frame_index != nframes:
        raise WireError("trailing bytes or frames after the last message")
    return out
