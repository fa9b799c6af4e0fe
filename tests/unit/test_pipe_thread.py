"""The background pipe thread (`actors._pipe_thread`): pipes read in one thread at the lowest
CPU priority, calls run there in order, and one reader's fault stops only that reader."""

from __future__ import annotations

import os
import threading

from actors._pipe_thread import LOWEST_NICE, PipeThread


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_calls_run_in_the_thread_in_order_at_the_lowest_priority() -> None:
    pipes = PipeThread(name="test-pipes")
    seen: list[tuple[int, str, int]] = []
    done = threading.Event()
    for i in range(100):
        pipes.call(lambda i=i: seen.append((i, threading.current_thread().name, _nice())))
    pipes.call(done.set)
    assert done.wait(10)
    assert [i for i, _, _ in seen] == list(range(100))
    assert {(name, nice) for _, name, nice in seen} == {("test-pipes", LOWEST_NICE)}
    assert _nice() < LOWEST_NICE  # the caller's own priority is untouched


def test_a_failing_reader_is_forgotten_and_the_others_read_on() -> None:
    pipes = PipeThread(name="test-pipes")
    bad_r, bad_w = os.pipe()
    good_r, good_w = os.pipe()
    got = bytearray()
    enough = threading.Event()
    bad_calls = []

    def bad() -> None:
        bad_calls.append(os.read(bad_r, 100))
        raise RuntimeError("a reader's bug")

    def good() -> None:
        got.extend(os.read(good_r, 100))
        if len(got) >= 2:
            enough.set()

    try:
        pipes.watch(bad_r, bad)
        pipes.watch(good_r, good)
        os.write(bad_w, b"x")
        os.write(good_w, b"a")
        os.write(bad_w, b"y")  # not read: the bad reader was forgotten
        os.write(good_w, b"b")
        assert enough.wait(10)
        flushed = threading.Event()
        pipes.call(flushed.set)
        assert flushed.wait(10)
        assert bytes(got) == b"ab"
        assert len(bad_calls) == 1
    finally:
        for fd in (bad_r, bad_w, good_r, good_w):
            os.close(fd)
