"""100 MB arguments round-trip intact, and the worker's memory shows no extra copies:
numpy arrays arrive zero-copy (a view on the received frame), bytes with one copy (a
bytes object must own its memory)."""

from __future__ import annotations

import hashlib
import resource

import numpy as np
import pytest

import actors

pytestmark = pytest.mark.usefixtures("cluster")
MB = 1 << 20
SIZE = 100 * MB


@actors.remote
class Sink:
    def peak_rss(self) -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def digest_bytes(self, data: bytes) -> tuple[str, int, str]:
        return type(data).__name__, len(data), hashlib.sha256(data).hexdigest()

    def digest_array(self, arr: np.ndarray) -> tuple[str, int, str]:
        return type(arr).__name__, arr.nbytes, hashlib.sha256(arr.data).hexdigest()

    def echo(self, x):
        return x


def _growth(sink: actors.ActorHandle, call) -> tuple[object, int]:
    before = actors.get(sink.peak_rss.remote())
    result = actors.get(call(), timeout=60)
    after = actors.get(sink.peak_rss.remote())
    return result, after - before


def test_100mb_bytes_round_trip_with_one_copy_in_the_worker() -> None:
    data = np.random.default_rng(1).integers(0, 255, SIZE, dtype=np.uint8).tobytes()
    sink = Sink.remote()
    result, growth = _growth(sink, lambda: sink.digest_bytes.remote(data))
    assert result == ("bytes", SIZE, hashlib.sha256(data).hexdigest())
    # the received frame plus the bytes object built from it (bytes must own their memory)
    print(f"worker peak RSS grew {growth / MB:.0f} MB for 100 MB bytes")
    assert growth < 2.3 * SIZE, f"worker grew {growth / MB:.0f} MB for a 100 MB argument"
    echoed = actors.get(sink.echo.remote(data), timeout=60)
    assert echoed == data


def test_100mb_numpy_round_trip_zero_copy_in_the_worker() -> None:
    arr = np.random.default_rng(2).random(SIZE // 8)
    sink = Sink.remote()
    result, growth = _growth(sink, lambda: sink.digest_array.remote(arr))
    assert result == ("ndarray", SIZE, hashlib.sha256(arr.data).hexdigest())
    print(f"worker peak RSS grew {growth / MB:.0f} MB for a 100 MB array")
    assert growth < 1.3 * SIZE, f"worker grew {growth / MB:.0f} MB for a 100 MB array"
    back = actors.get(sink.echo.remote(arr), timeout=60)
    assert np.array_equal(back, arr)
