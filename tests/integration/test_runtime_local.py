"""Runtimes in this process (loopback sockets, no other processes): the head service
reached through `rt.head` over the real transport answers only its `@rpc` methods; the
runtime's typed attributes and its per-runtime registry for higher layers
(`Runtime.attachment` / `attached` / `detach`)."""

from __future__ import annotations

import asyncio

import pytest

from actors.messages import ActorId, ActorSpec, NodeId
from actors.system import ActorDirectory, HeadClient, Runtime, ServiceTarget, new_token
from cluster._head import Head


class NoAgents:
    async def start_actor(self, agent_address: str, spec: ActorSpec, incarnation: int, node_id: NodeId,
                          gpu_ids: tuple[str, ...] = ()) -> None:
        pass

    async def kill_worker(self, agent_address: str, actor_id: ActorId, incarnation: int) -> None:
        pass


def test_over_the_transport_only_rpcs_are_reachable() -> None:
    """Two runtimes in one process (loopback sockets, no processes): `rt.head` reaches a
    head service, which answers its `@rpc` methods and refuses the others."""

    async def main() -> None:
        token = new_token()
        server = Runtime(token=token, node_ip="127.0.0.1", head_address=None, role="head")
        head = Head(NoAgents(), server.address)
        server.register("head", ServiceTarget(head))
        client = Runtime(token=token, node_ip="127.0.0.1", head_address=server.address, role="client")
        try:
            assert (await client.head.info(timeout=10))["address"] == server.address
            assert await client.head.kv_put("k", b"v", timeout=10) is True
            assert await client.head.kv_get("k", timeout=10) == b"v"
            with pytest.raises(AttributeError, match="tick is not callable remotely"):
                await client.call_service(server.address, "head", "tick", timeout=10)
            with pytest.raises(AttributeError, match="nope does not exist"):
                await client.call_service(server.address, "head", "nope", timeout=10)
            with pytest.raises(AttributeError, match="_notify is not callable remotely"):
                await client.call_service(server.address, "head", "_notify", timeout=10)
        finally:
            client.close()
            server.close()

    asyncio.run(main())


class Routers:
    def __init__(self) -> None:
        self.by_name: dict[str, str] = {}


class Other:
    pass


class Third:
    pass


def test_attachments_are_made_once_per_runtime_and_class() -> None:
    async def main() -> None:
        rt = Runtime(token=new_token(), node_ip="127.0.0.1", head_address=None, role="client")
        other_rt = Runtime(token=new_token(), node_ip="127.0.0.1", head_address=None, role="client")
        try:
            assert isinstance(rt.head, HeadClient) and isinstance(rt.directory, ActorDirectory)
            assert (rt.job_id, rt.namespace, rt.actor_id, rt.node_id) == (None, None, None, None)
            assert rt.attached(Routers) is None
            made: list[Routers] = []

            def make() -> Routers:
                made.append(Routers())
                return made[-1]

            routers = rt.attachment(Routers, make)
            assert rt.attachment(Routers, make) is routers and len(made) == 1
            assert rt.attached(Routers) is routers
            assert isinstance(rt.attachment(Other), Other)  # made by the class itself
            assert other_rt.attached(Routers) is None  # per runtime
            assert rt.detach(Routers) is routers
            assert rt.detach(Routers) is None and rt.attached(Routers) is None
            with pytest.raises(TypeError, match="made as"):
                rt.attachment(Third, lambda: Routers())  # type: ignore[arg-type,return-value]
        finally:
            rt.close()
            other_rt.close()

    asyncio.run(main())


def test_the_transport_knows_whether_a_connection_ever_came_up() -> None:
    """A call to an address where nothing listens stays queued here: failing its peer
    then gives the `make_unsent` error. A call on a connection that came up gets the
    other (it may have been delivered)."""
    from actors import ActorDiedError, ActorUnavailableError

    async def main() -> None:
        token = new_token()
        server = Runtime(token=token, node_ip="127.0.0.1", head_address=None, role="head")
        head = Head(NoAgents(), server.address)
        server.register("head", ServiceTarget(head))
        client = Runtime(token=token, node_ip="127.0.0.1", head_address=server.address, role="client")
        gone = Runtime(token=token, node_ip="127.0.0.1", head_address=None, role="client")
        nowhere = gone.address
        gone.close()  # its port is closed: connections to it never come up
        try:
            await client.head.info(timeout=10)
            assert client.transport.reached(server.address)
            fut = client.call(nowhere, b"rt/ping")
            # Give the connection every chance to (wrongly) come up: a few reconnect rounds.
            await asyncio.sleep(0.3)
            assert not client.transport.reached(nowhere)
            client.fail_peer(nowhere, lambda: ActorDiedError("in flight"),
                             make_unsent=lambda: ActorUnavailableError("never sent"))
            with pytest.raises(ActorUnavailableError, match="never sent"):
                await fut
            held = client.call(server.address, b"head/watch", (head.actors.version, head.epoch, 30.0))
            await asyncio.sleep(0)
            client.fail_peer(server.address, lambda: ActorDiedError("in flight"),
                             make_unsent=lambda: ActorUnavailableError("never sent"))
            with pytest.raises(ActorDiedError, match="in flight"):
                await held
        finally:
            client.close()
            server.close()

    asyncio.run(main())
