"""Unit tests of the frame codec (`actors._wire`).

Contract: `decode(encode(msgs))` gives back the same messages (payloads larger than
INLINE_LIMIT and out-of-band buffers travel as their own frames, uncopied), and any
malformed batch raises `WireError` -- never another exception.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import pytest

from actors._wire import INLINE_LIMIT, Kind, Message, WireError, decode, encode, extra_frames

_COUNT = struct.Struct("<H")
_ENTRY = struct.Struct("<BBQHIH")
_ALL_KINDS = (Kind.REQUEST, Kind.REPLY, Kind.ERROR, Kind.ONEWAY, Kind.CANCEL)


def _on_the_wire(frames: Sequence[object]) -> list[bytes]:
    """What the peer receives: every frame as its own immutable byte string."""
    return [bytes(memoryview(f)) for f in frames]  # type: ignore[arg-type]


def _norm(m: Message) -> tuple[int, int, bytes, bytes, list[bytes]]:
    """A message as plain values, so payload/buffer container types do not matter."""
    return (m.kind, m.req_id, bytes(m.route), bytes(memoryview(m.payload)),
            [bytes(memoryview(b)) for b in m.buffers])  # type: ignore[arg-type]


def _round_trip(msgs: Sequence[Message]) -> list[Message]:
    return decode(_on_the_wire(encode(msgs)))


def _assert_same(got: Sequence[Message], want: Sequence[Message]) -> None:
    assert [_norm(m) for m in got] == [_norm(m) for m in want]


# -- round trips ---------------------------------------------------------------------------


def test_single_message_round_trip() -> None:
    msg = Message(Kind.REQUEST, 42, b"actor/method", b"pickled-args")
    frames = encode([msg])
    assert len(frames) == 2  # header + inline, nothing large
    (out,) = decode(_on_the_wire(frames))
    assert out.kind == Kind.REQUEST
    assert out.req_id == 42
    assert out.route == b"actor/method"
    assert isinstance(out.route, bytes)
    assert bytes(out.payload) == b"pickled-args"
    assert list(out.buffers) == []


def test_many_messages_keep_order_and_fields() -> None:
    msgs = [Message(_ALL_KINDS[i % len(_ALL_KINDS)], i * 7919, f"r{i}".encode(), f"payload-{i}".encode() * i)
            for i in range(50)]
    out = _round_trip(msgs)
    _assert_same(out, msgs)


def test_empty_route_and_empty_payload() -> None:
    msgs = [Message(Kind.ONEWAY, 0, b"", b""), Message(Kind.REPLY, 1, b"x", b""), Message(Kind.CANCEL, 2, b"", b"y")]
    frames = encode(msgs)
    assert bytes(memoryview(frames[1])) == b"xy"  # only the non-empty parts are inline
    _assert_same(decode(_on_the_wire(frames)), msgs)


def test_extreme_header_values_round_trip() -> None:
    msg = Message(255, 2**64 - 1, b"r" * 0xFFFF, b"p")
    _assert_same(_round_trip([msg]), [msg])


def test_payload_at_inline_limit_stays_inline() -> None:
    payload = b"a" * INLINE_LIMIT
    frames = encode([Message(Kind.REPLY, 1, b"r", payload)])
    assert len(frames) == 2
    assert len(memoryview(frames[1])) == 1 + INLINE_LIMIT
    (out,) = decode(_on_the_wire(frames))
    assert bytes(out.payload) == payload


def test_payload_above_inline_limit_goes_to_its_own_frame_uncopied() -> None:
    payload = b"b" * (INLINE_LIMIT + 1)
    frames = encode([Message(Kind.REPLY, 1, b"route", payload)])
    assert len(frames) == 3
    assert frames[2] is payload  # handed to the socket as is, not copied
    assert bytes(memoryview(frames[1])) == b"route"
    received = _on_the_wire(frames)
    (out,) = decode(received)
    assert out.payload is received[2]  # the received frame itself, not a copy
    assert out.route == b"route"


def test_large_memoryview_payload_is_passed_through() -> None:
    backing = bytearray(b"c" * (INLINE_LIMIT * 2))
    payload = memoryview(backing)
    frames = encode([Message(Kind.REQUEST, 3, b"r", payload)])
    assert frames[2] is payload
    _assert_same(decode(_on_the_wire(frames)), [Message(Kind.REQUEST, 3, b"r", bytes(backing))])


def test_small_memoryview_payload_is_inlined() -> None:
    payload = memoryview(b"0123456789")[2:6]
    (out,) = _round_trip([Message(Kind.REPLY, 9, b"r", payload)])
    assert bytes(out.payload) == b"2345"


def test_buffers_are_extra_frames_in_message_order() -> None:
    big = b"B" * (INLINE_LIMIT + 10)
    b1, b2, b3 = bytearray(b"one"), memoryview(b"two"), b"three"
    msgs = [
        Message(Kind.REQUEST, 1, b"a", b"small", [b1]),
        Message(Kind.REQUEST, 2, b"b", big, [b2, b3]),
        Message(Kind.REQUEST, 3, b"c", b"tiny"),
    ]
    frames = encode(msgs)
    # header, inline, then message 1's buffer, message 2's payload and buffers.
    assert len(frames) == 6
    assert frames[2] is b1
    assert frames[3] is big
    assert frames[4] is b2
    assert frames[5] is b3
    assert extra_frames(bytes(memoryview(frames[0]))) == 4
    out = decode(_on_the_wire(frames))
    _assert_same(out, msgs)
    assert [len(m.buffers) for m in out] == [1, 2, 0]


def test_decode_returns_buffer_frames_as_received() -> None:
    msgs = [Message(Kind.REPLY, 5, b"r", b"p", [bytearray(b"x" * 100), memoryview(b"y" * 10)])]
    received = _on_the_wire(encode(msgs))
    (out,) = decode(received)
    assert out.buffers[0] is received[2]
    assert out.buffers[1] is received[3]


def test_decode_accepts_buffer_protocol_frames() -> None:
    msgs = [Message(Kind.REQUEST, 11, b"route", b"payload", [b"buf"]),
            Message(Kind.REPLY, 12, b"r2", b"z" * (INLINE_LIMIT + 5))]
    frames = [bytearray(f) if i % 2 else memoryview(f) for i, f in enumerate(_on_the_wire(encode(msgs)))]
    _assert_same(decode(frames), msgs)


def test_decode_accepts_tuple_of_frames() -> None:
    msgs = [Message(Kind.REQUEST, 1, b"r", b"p", [b"x"])]
    _assert_same(decode(tuple(_on_the_wire(encode(msgs)))), msgs)


def test_extra_frames_counts_frames_after_inline() -> None:
    msgs = [Message(Kind.REQUEST, 1, b"r", b"x" * (INLINE_LIMIT + 1), [b"1", b"2"]),
            Message(Kind.REPLY, 2, b"r", b"small", [b"3"]),
            Message(Kind.ONEWAY, 3, b"r", b"small")]
    frames = encode(msgs)
    assert extra_frames(bytes(memoryview(frames[0]))) == len(frames) - 2 == 4


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


def test_encode_rejects_an_empty_batch() -> None:
    with pytest.raises(WireError):
        encode([])


def test_encode_accepts_the_largest_batch_and_rejects_one_more() -> None:
    msgs = [Message(Kind.ONEWAY, i, b"", b"") for i in range(0xFFFF)]
    out = _round_trip(msgs)
    assert len(out) == 0xFFFF
    assert out[-1].req_id == 0xFFFF - 1
    with pytest.raises(WireError):
        encode([*msgs, Message(Kind.ONEWAY, 0, b"", b"")])


def _random_message(rng: random.Random) -> Message:
    size = rng.choice([0, 1, rng.randrange(2, 200), INLINE_LIMIT - 1, INLINE_LIMIT, INLINE_LIMIT + 1,
                       rng.randrange(INLINE_LIMIT, 3 * INLINE_LIMIT)])
    payload = rng.randbytes(size)
    if rng.random() < 0.2:
        payload = memoryview(bytearray(payload))  # type: ignore[assignment]
    buffers = [rng.choice([bytes, bytearray])(rng.randbytes(rng.randrange(0, 300))) for _ in range(rng.randrange(0, 4))]
    return Message(rng.choice(_ALL_KINDS), rng.randrange(0, 2**64), rng.randbytes(rng.randrange(0, 40)), payload,
                   buffers)


def test_randomized_round_trips() -> None:
    rng = random.Random(20240517)
    for _ in range(300):
        msgs = [_random_message(rng) for _ in range(rng.randrange(1, 12))]
        frames = encode(msgs)
        own = sum(len(m.payload) > INLINE_LIMIT for m in msgs) + sum(len(m.buffers) for m in msgs)
        assert len(frames) == 2 + own
        assert extra_frames(bytes(memoryview(frames[0]))) == own
        _assert_same(decode(_on_the_wire(frames)), msgs)


def test_documented_invariant_holds_literally() -> None:
    msgs = [Message(Kind.REQUEST, 1, b"route", b"payload"),
            Message(Kind.REPLY, 2, b"r", b"x" * (INLINE_LIMIT + 1), (b"buf1", b"buf2")),
            Message(Kind.ONEWAY, 3, b"", b"")]
    assert decode(encode(msgs)) == msgs
    assert decode(_on_the_wire(encode(msgs))) == msgs


def test_decoded_buffers_are_a_tuple() -> None:
    (out,) = _round_trip([Message(Kind.REPLY, 1, b"r", b"p", [b"a", b"b"])])
    assert out.buffers == (b"a", b"b")
    (bare,) = _round_trip([Message(Kind.REPLY, 1, b"r", b"p")])
    assert bare.buffers == ()


# -- malformed batches ---------------------------------------------------------------------


def _header(*entries: tuple[int, int, int, int, int, int], count: int | None = None) -> bytes:
    n = len(entries) if count is None else count
    return _COUNT.pack(n) + b"".join(_ENTRY.pack(*e) for e in entries)


def _valid() -> list[bytes]:
    """Two messages: the first with a payload frame and a buffer, the second inline."""
    return _on_the_wire(encode([Message(Kind.REQUEST, 1, b"route", b"p" * (INLINE_LIMIT + 1), [b"buf"]),
                                Message(Kind.REPLY, 2, b"r2", b"inline")]))


MALFORMED: dict[str, list[bytes]] = {
    "no frames": [],
    "only a header": [_header((1, 0, 1, 0, 0, 0))],
    "empty header": [b"", b""],
    "one-byte header": [b"\x01", b""],
    "truncated header": [_header((1, 0, 1, 1, 1, 0))[:-1], b"rp"],
    "count larger than entries": [_header((1, 0, 1, 1, 1, 0), count=2), b"rp"],
    "count smaller than entries": [_header((1, 0, 1, 1, 1, 0), (1, 0, 2, 1, 1, 0), count=1), b"rprp"],
    "header with trailing bytes": [_header((1, 0, 1, 1, 1, 0)) + b"\x00", b"rp"],
    "route past inline frame": [_header((1, 0, 1, 10, 0, 0)), b"short"],
    "payload past inline frame": [_header((1, 0, 1, 1, 10, 0)), b"rpayload"],
    "second message past inline frame": [_header((1, 0, 1, 1, 1, 0), (1, 0, 2, 1, 1, 0)), b"rpr"],
    "missing payload frame": [_header((1, 1, 1, 1, INLINE_LIMIT + 1, 0)), b"r"],
    "payload frame too short": [_header((1, 1, 1, 1, INLINE_LIMIT + 1, 0)), b"r", b"x" * INLINE_LIMIT],
    "payload frame too long": [_header((1, 1, 1, 1, 5, 0)), b"r", b"123456"],
    "missing buffer frames": [_header((1, 0, 1, 1, 1, 2)), b"rp", b"only-one"],
    "missing all buffer frames": [_header((1, 0, 1, 1, 1, 1)), b"rp"],
    "trailing frame": [_header((1, 0, 1, 1, 1, 0)), b"rp", b"extra"],
    "trailing inline bytes": [_header((1, 0, 1, 1, 1, 0)), b"rpX"],
    "inline bytes with empty batch": [_header(), b"x"],
    "frames with empty batch": [_header(), b"", b"x"],
    "valid batch minus its last frame": _valid()[:-1],
    "valid batch plus a frame": [*_valid(), b"more"],
    "valid batch with truncated inline": [_valid()[0], _valid()[1][:-1], *_valid()[2:]],
}


@pytest.mark.parametrize("frames", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_batch_raises_wire_error(frames: list[bytes]) -> None:
    with pytest.raises(WireError):
        decode(frames)


@pytest.mark.parametrize("header", [b"", b"\x01", _header((1, 0, 1, 0, 0, 0), count=2), _header((1, 0, 1, 0, 0, 0)) + b"!"])
def test_extra_frames_rejects_malformed_header(header: bytes) -> None:
    with pytest.raises(WireError):
        extra_frames(header)


def test_the_valid_base_of_the_malformed_cases_decodes() -> None:
    assert [m.req_id for m in decode(_valid())] == [1, 2]


def _mutate(rng: random.Random, frames: list[bytes]) -> list[bytes]:
    frames = list(frames)
    op = rng.randrange(6)
    i = rng.randrange(len(frames))
    if op == 0 and frames[i]:  # flip a byte
        b = bytearray(frames[i])
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        frames[i] = bytes(b)
    elif op == 1:  # truncate a frame
        frames[i] = frames[i][: rng.randrange(len(frames[i]) + 1)]
    elif op == 2:  # grow a frame
        frames[i] = frames[i] + rng.randbytes(rng.randrange(1, 5))
    elif op == 3:  # drop a frame
        del frames[i]
    elif op == 4:  # add a frame
        frames.insert(rng.randrange(len(frames) + 1), rng.randbytes(rng.randrange(0, 20)))
    else:  # random header byte
        h = bytearray(frames[0])
        if h:
            h[rng.randrange(len(h))] = rng.randrange(256)
        frames[0] = bytes(h)
    return frames


def test_randomly_corrupted_batches_raise_only_wire_error() -> None:
    rng = random.Random(7)
    errors = 0
    for _ in range(2000):
        msgs = [Message(rng.choice(_ALL_KINDS), rng.randrange(2**64), rng.randbytes(rng.randrange(0, 8)),
                        rng.randbytes(rng.choice([0, 3, 50, INLINE_LIMIT + 1])),
                        [rng.randbytes(rng.randrange(0, 10)) for _ in range(rng.randrange(0, 3))])
                for _ in range(rng.randrange(1, 4))]
        frames = _on_the_wire(encode(msgs))
        for _ in range(rng.randrange(1, 3)):
            if frames:
                frames = _mutate(rng, frames)
        try:
            out = decode(frames)
        except WireError:
            errors += 1
            continue
        # A mutation that still decodes must account for exactly the frames it was given.
        own_payloads = sum(any(m.payload is f for f in frames[2:]) for m in out)
        assert 2 + own_payloads + sum(len(m.buffers) for m in out) == len(frames)
    assert errors > 1000  # the mutations really do produce malformed batches
