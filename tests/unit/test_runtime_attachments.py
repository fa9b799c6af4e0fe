"""The runtime's typed attributes and its per-runtime registry for higher layers
(`Runtime.attachment` / `attached` / `detach`), on one runtime in this process."""

from __future__ import annotations

import asyncio

import pytest

from actors.system import ActorDirectory, HeadClient, Runtime, new_token


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
