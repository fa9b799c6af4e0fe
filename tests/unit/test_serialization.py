"""Unit tests of argument/result serialization (`actors._serialization`).

Contract: `loads(*dumps(x)) == x`; large bytes/bytearray and numpy arrays travel
out-of-band without a copy on the send side; code that cannot be found by name
(`__main__`, `<locals>`, lambdas) falls back to cloudpickle and travels by value.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import pickle
import threading
import types
from collections import OrderedDict
from typing import Any

import numpy as np
import pytest

from actors._serialization import OOB_THRESHOLD, dumps, dumps_code, loads, loads_code
from actors.messages import ActorId, ActorOptions, ActorState, NodeId

SMALL_STREAM = 512  # a pickle stream that references out-of-band data stays this small


class ModuleLevelPoint:
    """Importable by name: pickled by reference with the C pickler."""

    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModuleLevelPoint) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def module_level_square(x: int) -> int:
    return x * x


def _received(buffers: list[pickle.PickleBuffer]) -> list[bytes]:
    """The out-of-band buffers as the peer receives them: separate byte strings."""
    return [bytes(memoryview(b)) for b in buffers]


def _round_trip(obj: Any) -> Any:
    data, buffers = dumps(obj)
    return loads(data, _received(buffers))


# -- plain values ----------------------------------------------------------------------------

VALUES: list[Any] = [
    None, True, False, 0, -1, 2**100, 3.5, float("inf"), 1 + 2j, "", "text", "ünïcødé ✓", b"", b"\x00bytes",
    bytearray(b"mutable"), [1, [2, [3]]], (1, "a", None), {"k": [1, 2], 3: "v"}, {1, 2, 3}, frozenset({"a"}),
    OrderedDict(a=1, b=2), decimal.Decimal("1.10"), fractions.Fraction(1, 3), datetime.datetime(2024, 5, 17, 12, 30),
    datetime.timedelta(seconds=5), ModuleLevelPoint(1, 2), ActorId("abc123"), ActorState.ALIVE,
    ActorOptions(name="n", num_cpus=0.5, resources=(("GPU", 1.0),), node_id=NodeId("n1")),
    b"x" * (OOB_THRESHOLD - 1),
]


@pytest.mark.parametrize("value", VALUES, ids=[type(v).__name__ + str(i) for i, v in enumerate(VALUES)])
def test_round_trip_common_values(value: Any) -> None:
    data, buffers = dumps(value)
    assert isinstance(data, bytes)
    assert buffers == []  # nothing here is large enough to go out-of-band
    out = loads(data)
    assert out == value
    assert type(out) is type(value)


def test_loads_without_buffers_is_plain_pickle() -> None:
    data, _ = dumps({"a": [1, 2]})
    assert pickle.loads(data) == {"a": [1, 2]}


def test_shared_references_are_preserved() -> None:
    inner = [1, 2]
    out = _round_trip([inner, inner])
    assert out[0] is out[1]


def test_module_level_code_is_pickled_by_reference() -> None:
    data, buffers = dumps(module_level_square)
    assert buffers == []
    assert b"module_level_square" in data
    assert loads(data) is module_level_square
    assert loads(dumps(ModuleLevelPoint)[0]) is ModuleLevelPoint


def test_unpicklable_object_raises() -> None:
    with pytest.raises(TypeError):
        dumps({"lock": threading.Lock()})


# -- large byte strings out-of-band -----------------------------------------------------------


def test_bytes_just_below_threshold_stay_in_band() -> None:
    data, buffers = dumps(b"y" * (OOB_THRESHOLD - 1))
    assert buffers == []
    assert len(data) > OOB_THRESHOLD - 1


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_large_byte_strings_go_out_of_band_without_copy(kind: type) -> None:
    original = kind(b"z" * OOB_THRESHOLD)
    data, buffers = dumps(original)
    assert len(buffers) == 1
    assert isinstance(buffers[0], pickle.PickleBuffer)
    assert memoryview(buffers[0]).obj is original  # the sender's memory, not a copy
    assert len(data) < SMALL_STREAM
    out = loads(data, _received(buffers))
    assert type(out) is kind
    assert out == original


def test_large_bytes_inside_a_structure() -> None:
    blob = bytes(range(256)) * (OOB_THRESHOLD // 256 + 1)
    value = {"name": "img", "data": blob, "extra": [bytearray(blob), b"small"]}
    data, buffers = dumps(value)
    assert len(buffers) == 2
    assert memoryview(buffers[0]).obj is blob
    assert memoryview(buffers[1]).obj is value["extra"][0]
    assert len(data) < SMALL_STREAM
    out = loads(data, _received(buffers))
    assert out == value
    assert type(out["extra"][0]) is bytearray


def test_received_bytes_own_their_memory() -> None:
    original = b"q" * OOB_THRESHOLD
    data, buffers = dumps(original)
    frame = bytearray(memoryview(buffers[0]))
    out = loads(data, [frame])
    frame[0] = ord("!")  # the transport reuses its receive buffer
    assert out == original


def test_loads_accepts_a_tuple_of_buffers() -> None:
    original = [b"a" * OOB_THRESHOLD, b"b" * OOB_THRESHOLD]
    data, buffers = dumps(original)
    assert loads(data, tuple(_received(buffers))) == original


# -- numpy ------------------------------------------------------------------------------------


def test_numpy_array_goes_out_of_band_without_copy() -> None:
    arr = np.arange(100_000, dtype=np.float64)
    data, buffers = dumps(arr)
    assert len(buffers) == 1
    assert memoryview(buffers[0]).obj is arr
    assert np.shares_memory(np.asarray(memoryview(buffers[0])), arr)
    assert len(data) < SMALL_STREAM
    out = loads(data, buffers)
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.int32).reshape(3, 4),
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    np.arange(20, dtype=np.int16)[::2],  # not contiguous
    np.zeros((0, 3), dtype=np.uint8),
    np.array([True, False]),
], ids=["2d", "fortran", "strided", "empty", "bool"])
def test_numpy_arrays_round_trip(arr: np.ndarray) -> None:
    out = _round_trip(arr)
    assert out.dtype == arr.dtype
    assert out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_numpy_array_is_a_view_on_the_received_frame() -> None:
    arr = np.arange(1000, dtype=np.int64)
    data, buffers = dumps(arr)
    frame = bytearray(memoryview(buffers[0]).cast("B"))
    out = loads(data, [frame])
    np.testing.assert_array_equal(out, arr)
    assert np.shares_memory(out, np.frombuffer(frame, dtype=np.uint8))


def test_numpy_array_before_large_bytes_round_trips() -> None:
    arr = np.arange(OOB_THRESHOLD, dtype=np.uint8)
    blob = b"\xff" * OOB_THRESHOLD
    out = _round_trip({"arr": arr, "blob": blob})
    np.testing.assert_array_equal(out["arr"], arr)
    assert out["blob"] == blob


def test_large_bytes_before_numpy_array_round_trips() -> None:
    # Regression: the array was rebuilt from the bytes' buffer (same size: silently wrong).
    blob = b"\xff" * OOB_THRESHOLD
    arr = np.arange(OOB_THRESHOLD, dtype=np.uint8)
    out = _round_trip({"blob": blob, "arr": arr})
    assert out["blob"] == blob
    np.testing.assert_array_equal(out["arr"], arr)


def test_interleaved_arrays_and_large_byte_strings_round_trip() -> None:
    n = OOB_THRESHOLD
    value = [np.full(n, 1, dtype=np.uint8), b"\x02" * n, np.full(n // 8, 3, dtype=np.int64), bytearray(b"\x04" * n),
             b"\x05" * n, np.full(n, 6, dtype=np.uint8), "small", b"\x07" * 10]
    data, buffers = dumps(value)
    assert len(buffers) == 6
    assert all(memoryview(b).obj is v for b, v in zip(buffers, value[:6], strict=True))  # stream order
    out = loads(data, _received(buffers))
    for got, want in zip(out, value, strict=True):
        assert type(got) is type(want)
        if isinstance(want, np.ndarray):
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want


def test_interleaved_buffers_on_the_by_value_path() -> None:
    blob = b"\x01" * OOB_THRESHOLD
    arr = np.arange(OOB_THRESHOLD, dtype=np.uint8)
    value = (lambda: "code", blob, arr)
    data, buffers = dumps(value)
    assert len(buffers) == 2
    fn, blob2, arr2 = loads(data, _received(buffers))
    assert fn() == "code"
    assert blob2 == blob
    np.testing.assert_array_equal(arr2, arr)


# -- code by value --------------------------------------------------------------------------


def test_local_class_instance_round_trips_by_value() -> None:
    class Local:
        def __init__(self, v: int) -> None:
            self.v = v

        def double(self) -> int:
            return self.v * 2

    assert "<locals>" in Local.__qualname__
    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(Local(1))  # the C pickler alone cannot do it
    out = _round_trip(Local(21))
    assert type(out).__name__ == "Local"
    assert out.v == 21
    assert out.double() == 42


def test_local_function_with_closure_round_trips() -> None:
    offset = 10

    def add(x: int) -> int:
        return x + offset

    out = _round_trip(add)
    assert out(5) == 15


def test_lambda_round_trips() -> None:
    out = _round_trip(lambda x: x * 3)
    assert out(4) == 12


def test_local_class_itself_round_trips() -> None:
    class Shape:
        sides = 3

    out = _round_trip(Shape)
    assert out.__name__ == "Shape"
    assert out.sides == 3


def _main_class() -> type:
    def area(self: Any) -> int:
        return self.w * self.h

    cls = type("MainRect", (), {"area": area})
    cls.__module__ = "__main__"
    cls.__qualname__ = "MainRect"
    return cls


def test_class_from_main_round_trips_by_value() -> None:
    cls = _main_class()
    obj = cls()
    obj.w, obj.h = 3, 4
    assert cls.__module__ == "__main__"
    out = _round_trip(obj)
    assert type(out).__name__ == "MainRect"
    assert (out.w, out.h) == (3, 4)
    assert out.area() == 12


def test_function_from_main_round_trips_by_value() -> None:
    fn = types.FunctionType(module_level_square.__code__, {}, "square")
    fn.__module__ = "__main__"
    fn.__qualname__ = "square"
    out = _round_trip(fn)
    assert out is not module_level_square
    assert out(7) == 49


def test_by_value_path_still_sends_large_bytes_out_of_band() -> None:
    class Holder:
        def __init__(self, data: bytes) -> None:
            self.data = data

    blob = b"h" * (2 * OOB_THRESHOLD)
    data, buffers = dumps(Holder(blob))
    assert len(buffers) == 1
    assert memoryview(buffers[0]).obj is blob
    out = loads(data, _received(buffers))
    assert out.data == blob


def test_by_value_path_sends_numpy_out_of_band() -> None:
    arr = np.arange(5000, dtype=np.float32)
    value = (lambda: None, arr)
    data, buffers = dumps(value)
    assert len(buffers) == 1
    assert memoryview(buffers[0]).obj is arr
    np.testing.assert_array_equal(loads(data, _received(buffers))[1], arr)


# -- dumps_code / loads_code ----------------------------------------------------------------


def test_dumps_code_round_trips_a_local_class_with_arguments() -> None:
    class Counter:
        def __init__(self, start: int, step: int = 1) -> None:
            self.n, self.step = start, step

        def incr(self) -> int:
            self.n += self.step
            return self.n

    payload = dumps_code((Counter, (10,), {"step": 5}))
    assert isinstance(payload, bytes)
    cls, args, kwargs = loads_code(payload)
    assert cls.__name__ == "Counter"
    assert cls(*args, **kwargs).incr() == 15


def test_dumps_code_round_trips_importable_and_lambda_code() -> None:
    fn, point, lam = loads_code(dumps_code((module_level_square, ModuleLevelPoint(1, 2), lambda: "hi")))
    assert fn is module_level_square
    assert point == ModuleLevelPoint(1, 2)
    assert lam() == "hi"


# -- the per-thread pickler is reused: nothing leaks from one dumps() into the next ---------
class _SerializesInside:
    """Its __reduce__ serializes something else: a dumps() inside a dumps()."""

    def __reduce__(self):
        inner, _ = dumps({"inner": [1, 2, 3]})
        return (loads, (inner,))


def test_a_dumps_inside_a_dumps_gets_its_own_pickler() -> None:
    data, buffers = dumps(["outer", _SerializesInside(), "tail"])
    assert loads(data, buffers) == ["outer", {"inner": [1, 2, 3]}, "tail"]


def test_consecutive_dumps_share_no_memo_or_buffers() -> None:
    shared = ["same object"]
    first = dumps((shared, shared, b"x" * OOB_THRESHOLD))
    second = dumps((shared,))
    assert len(first[1]) == 1 and second[1] == []
    assert loads(*second) == (["same object"],)
    again = loads(*first)
    assert again[0] is again[1]


def test_a_failed_dumps_leaves_the_next_one_whole() -> None:
    with pytest.raises(TypeError):
        dumps(("ok", threading.Lock()))
    assert loads(*dumps(("after", 1))) == ("after", 1)


# -- arguments that cannot be serialized (issue 16, item 3) -------------------------------
def test_prepare_call_names_the_argument_that_cannot_be_serialized() -> None:
    import threading

    from actors.system import prepare_call

    class Refuses:
        def __reduce__(self):
            raise ValueError("not today")

    with pytest.raises(TypeError, match=r"^m: argument 1 \(a lock\) cannot be serialized: TypeError"):
        prepare_call((1, threading.Lock()), None, "m")
    with pytest.raises(TypeError, match=r"keyword argument 'x' \(a Refuses\) cannot be serialized: ValueError: not"):
        prepare_call((), {"x": Refuses()}, "m")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(TypeError, match=r"argument 0 \(a list\) cannot be serialized: RecursionError"):
        prepare_call((deep,), None, "m")
    call = prepare_call((1, "two"), {"k": 3}, "m")
    assert loads(call.payload, list(call.buffers)) == ((1, "two"), {"k": 3})
    assert prepare_call((), None).payload == b""


def test_one_failing_start_does_not_drop_the_rest_of_a_burst() -> None:
    from serve._data.client import ServeClient

    ran: list[int] = []

    def bad() -> None:
        raise RuntimeError("boom")

    ServeClient._start_calls([(ran.append, (1,)), (bad, ()), (ran.append, (2,))])
    assert ran == [1, 2]
