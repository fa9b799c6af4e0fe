"""ProxyServer on its own (no cluster): binding its port."""

from __future__ import annotations

import asyncio

import httpx

from proxy import HTTPRequest, HTTPResponse, ProxyServer

from ..conftest import free_port


async def _never(target: str, request: HTTPRequest, request_id: str) -> HTTPResponse:
    raise AssertionError("no request is routed in these tests")


def test_two_servers_starting_at_once_on_one_port_one_fails_with_an_oserror() -> None:
    async def main() -> list:
        port = free_port()
        servers = [ProxyServer("127.0.0.1", port, _never) for _ in range(2)]
        for s in servers:
            s.set_routes({})  # an (empty) table: healthy once listening
        outcomes = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
        started = [s for s, o in zip(servers, outcomes, strict=True) if o is None]
        async with httpx.AsyncClient() as client:  # the one that started serves
            health = await client.get(f"http://127.0.0.1:{port}/-/healthz")
        for s in started:
            await s.stop()
        return [*outcomes, health.text]

    first, second, health = asyncio.run(main())  # a sys.exit from uvicorn would end the test here
    assert sorted(type(o).__name__ for o in (first, second)) == ["NoneType", "OSError"]
    assert health == "success"


def test_port_zero_takes_a_free_port_and_reports_it() -> None:
    async def main() -> int:
        server = ProxyServer("127.0.0.1", 0, _never)
        await server.start()
        try:
            async with httpx.AsyncClient() as client:
                url = f"http://127.0.0.1:{server.port}/-/healthz"
                before = await client.get(url)  # listening, but no route table yet: not ready
                assert (before.status_code, before.text) == (503, "starting: no route table yet")
                server.set_routes({})
                assert (await client.get(url)).text == "success"
        finally:
            await server.stop()
        return server.port

    assert asyncio.run(main()) > 0
