"""The typed head client (`actors.system.HeadClient`) against the head service it calls.

The first tests compare the two classes, so that a head RPC added, renamed or changed
without its client method (or the reverse) fails here: every `@rpc` method of
`cluster._head.Head` has a client method with the same parameters and types, plus a
keyword-only `timeout`, and the client has no method the head lacks. The others run the
client against a real `Head` in-process (a fake transport calls its methods), and check
time-outs and retries.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from typing import Any

import pytest

from actors.exceptions import ClusterUnavailableError
from actors.messages import ActorId, ActorSpec, NodeId
from actors.system import ENV_TIMEOUT, HeadClient, rpc_methods
from cluster._head import Head


def client_methods() -> set[str]:
    return {name for name, fn in inspect.getmembers(HeadClient, inspect.iscoroutinefunction)
            if not name.startswith("_") and name != "call"}


def test_every_head_rpc_has_a_client_method_and_no_more() -> None:
    rpcs = rpc_methods(Head)
    assert len(rpcs) >= 20
    assert client_methods() == rpcs


def test_head_internals_are_not_rpcs() -> None:
    assert not {"tick", "check_nodes", "check_jobs", "changed_event", "restore_actor_version"} & rpc_methods(Head)


@pytest.mark.parametrize("name", sorted(rpc_methods(Head)))
def test_client_method_mirrors_the_head_method(name: str) -> None:
    head_sig = inspect.signature(getattr(Head, name))
    client_sig = inspect.signature(getattr(HeadClient, name))
    head_params = [p for p in head_sig.parameters.values() if p.name != "self"]
    client_params = [p for p in client_sig.parameters.values() if p.name != "self"]
    timeout = client_params.pop()
    assert (timeout.name, timeout.kind, timeout.default) == ("timeout", inspect.Parameter.KEYWORD_ONLY, ENV_TIMEOUT)
    assert [(p.name, p.kind, p.default) for p in client_params] == \
        [(p.name, p.kind, p.default) for p in head_params]
    head_hints = typing.get_type_hints(getattr(Head, name))
    client_hints = typing.get_type_hints(getattr(HeadClient, name))
    client_hints.pop("timeout")
    assert client_hints == head_hints


# -- the client against a real head -----------------------------------------------------------------


class NoAgents:
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        pass

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        pass


class InProcess:
    """A head transport that calls the head's method directly, recording each call."""

    def __init__(self, head: Head) -> None:
        self.head = head
        self.calls: list[tuple[str, tuple[Any, ...], float | None]] = []

    async def __call__(self, method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
        self.calls.append((method, args, timeout))
        assert method in rpc_methods(Head)
        result = getattr(self.head, method)(*args)
        return await result if inspect.isawaitable(result) else result


def test_client_calls_reach_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEROSERVE_HEAD_TIMEOUT_S", raising=False)

    async def main() -> None:
        transport = InProcess(Head(NoAgents(), "tcp://head:1"))
        head = HeadClient(transport)
        assert await head.kv_put("a/1", b"x") is True
        assert await head.kv_put("a/1", b"y", overwrite=False) is False
        assert await head.kv_get("a/1") == b"x"
        assert await head.kv_keys("a/") == ["a/1"]
        assert await head.kv_delete("a/1") is True
        job = await head.register_job("tcp://driver:1", "ns", 42)
        assert job["namespace"] == "ns"
        assert await head.nodes() == []
        assert await head.get_named_actor("nobody", None) is None
        assert (await head.info())["address"] == "tcp://head:1"
        reply = await head.watch(-1, None, 0)
        assert reply.head_epoch == transport.head.epoch and reply.actors == ()
        assert [t for _, _, t in transport.calls] == [10.0] * len(transport.calls)

    asyncio.run(main())


def test_timeouts_env_default_override_and_none(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        transport = InProcess(Head(NoAgents()))
        head = HeadClient(transport)
        monkeypatch.setenv("ZEROSERVE_HEAD_TIMEOUT_S", "2.5")
        await head.nodes()
        await head.nodes(timeout=0.25)
        await head.nodes(timeout=None)
        assert [t for _, _, t in transport.calls] == [2.5, 0.25, None]

    asyncio.run(main())


def test_retrying_gets_through_an_absent_head(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        transport = InProcess(Head(NoAgents()))
        failures = [ClusterUnavailableError("head restarting")] * 2
        timeouts: list[float | None] = []

        async def flaky(method: str, args: tuple[Any, ...], timeout: float | None) -> Any:
            timeouts.append(timeout)
            if failures:
                raise failures.pop()
            return await transport(method, args, timeout)

        sleeps: list[float] = []
        real_sleep = asyncio.sleep

        async def fast_sleep(delay: float) -> None:
            sleeps.append(delay)
            await real_sleep(0)

        monkeypatch.setattr(asyncio, "sleep", fast_sleep)
        head = HeadClient(flaky)
        assert await head.retrying().node_heartbeat(NodeId("n1")) is False
        assert timeouts == [5.0, 5.0, 5.0]  # each attempt waits 5 s
        assert sleeps == [0.1, 0.2]
        with pytest.raises(ClusterUnavailableError):
            failures.extend([ClusterUnavailableError("down")] * 3)
            await head.retrying(attempts=3).nodes()
        with pytest.raises(ClusterUnavailableError):  # without retrying: the first failure is final
            failures.append(ClusterUnavailableError("down"))
            await head.nodes()

    asyncio.run(main())


def test_retrying_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="attempts"):
        HeadClient(InProcess(Head(NoAgents()))).retrying(0)

