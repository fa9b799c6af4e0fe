"""Which runtime errors mean "this process's runtime is shutting down" (RuntimeShutDownError)
and which are other runtime failures (plain ActorsError), and how the HTTP proxy answers
each: 503 only for the former (a load balancer may retry another proxy), 500 otherwise.

Two real runtimes in this process, talking over their real CURVE sockets on loopback.
"""

from __future__ import annotations

import asyncio

import pytest

import actors
from actors.system import Runtime
from serve._data.http_proxy import _status_of


def _refuse_to_unpickle() -> None:
    raise RuntimeError("this reply cannot be rebuilt here")


class _Undecodable:
    def __reduce__(self):
        return (_refuse_to_unpickle, ())


class _Replies:
    """A target: `ok` answers, `bad` answers with something the caller cannot unpickle,
    anything else never answers."""

    def __init__(self) -> None:
        self.received = asyncio.Event()

    def handle(self, call) -> None:
        self.received.set()
        if call.method == "ok":
            call.reply("ok")
        elif call.method == "bad":
            call.reply(_Undecodable())

    def cancel(self, identity: bytes, req_id: int) -> None:
        pass


def _runtime(role: str) -> Runtime:
    return Runtime(token="t", node_ip="127.0.0.1", head_address=None, role=role, max_message_bytes=1 << 20)


async def _errors_seen() -> dict[str, BaseException]:
    caller, callee = _runtime("caller"), _runtime("callee")
    target = _Replies()
    callee.register("t", target)
    seen: dict[str, BaseException] = {}
    try:
        assert await caller.call(callee.address, b"t/ok") == "ok"
        for name, route in (("no target", b"nosuch/x"), ("undecodable reply", b"t/bad")):
            with pytest.raises(actors.ActorsError) as info:
                await asyncio.wait_for(caller.call(callee.address, route), 30)
            seen[name] = info.value
        target.received.clear()
        pending = caller.call(callee.address, b"t/hang")
        await asyncio.wait_for(target.received.wait(), 30)  # the call is at the callee, unanswered
    finally:
        caller.close()
    with pytest.raises(actors.ActorsError) as info:
        await asyncio.wait_for(pending, 30)
    seen["pending at close"] = info.value
    with pytest.raises(actors.ActorsError) as info:
        await caller.call(callee.address, b"t/ok")
    seen["called after close"] = info.value
    callee.close()
    return seen


def test_only_a_runtime_shutting_down_raises_runtime_shut_down_error_and_is_answered_503() -> None:
    seen = asyncio.run(_errors_seen())
    for name in ("pending at close", "called after close"):
        assert isinstance(seen[name], actors.RuntimeShutDownError), (name, seen[name])
        assert _status_of(seen[name]) == 503, name
    assert "no target 'nosuch'" in str(seen["no target"])
    assert "could not decode the reply" in str(seen["undecodable reply"])
    for name in ("no target", "undecodable reply"):
        assert not isinstance(seen[name], actors.RuntimeShutDownError), (name, seen[name])
        assert _status_of(seen[name]) == 500, (name, seen[name])


def test_proxy_status_of_each_error_class() -> None:
    from serve.exceptions import BackPressureError

    assert _status_of(actors.RuntimeShutDownError("the runtime of this process is shut down")) == 503
    assert _status_of(BackPressureError("full")) == 503
    assert _status_of(actors.ActorsError("no target 'x' in this process")) == 500
    assert _status_of(actors.ActorDiedError("the replica died with the request")) == 500
    assert _status_of(actors.GetTimeoutError("late")) == 500
    assert _status_of(ValueError("the deployment's own error")) == 500


def test_a_runtime_whose_cluster_is_gone_fails_its_calls_at_once() -> None:
    """`Runtime.cluster_gone` (a driver's embedded cluster exited): the call in flight and
    every later one fail at once with ClusterUnavailableError(reason), instead of each
    waiting for its time-out (a driver's shutdown after Ctrl-C waited ~20 s that way)."""

    async def main() -> None:
        caller, callee = _runtime("caller"), _runtime("callee")
        target = _Replies()
        callee.register("t", target)
        try:
            assert await caller.call(callee.address, b"t/ok") == "ok"
            silent = caller.call(callee.address, b"t/never")  # the callee never answers it
            await asyncio.wait_for(target.received.wait(), 10)
            caller.cluster_gone("the embedded cluster is gone: its head exited with code 0")
            with pytest.raises(actors.ClusterUnavailableError, match="its head exited"):
                await asyncio.wait_for(silent, 1.0)
            with pytest.raises(actors.ClusterUnavailableError, match="its head exited"):
                await asyncio.wait_for(caller.call(callee.address, b"t/ok"), 1.0)
        finally:
            caller.close()
            callee.close()

    asyncio.run(main())
