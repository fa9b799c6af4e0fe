"""The proxy's websocket path on its own (no cluster): a real uvicorn server and websocket
client, the replica side in-process (`WebSocketSession` behind a fake forward): messages
both ways, close codes, `root_path`, and each websocket's end reported to the observer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from proxy import HTTPRequest, HTTPResponse, ProxyServer, WebSocketMessages, WebSocketSession

pytestmark = pytest.mark.timeout(60)


async def _app(scope: dict, receive: Any, send: Any) -> None:
    await receive()
    if scope["path"].endswith("/refuse"):
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": f"path={scope['path']} root={scope['root_path']}"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            ended.append(message["code"])
            return
        if message.get("text") == "bye":
            await send({"type": "websocket.close", "code": 4002, "reason": "asked to"})
            return
        await send({"type": "websocket.send", "text": message["text"][::-1]})


ended: list[int] = []


class _InProcess:
    """A websocket stream whose 'replica' is a session in this process."""

    def __init__(self, session: WebSocketSession, first: dict) -> None:
        self.session, self.first = session, first

    async def pull(self) -> WebSocketMessages:
        return await self.session.pull()

    async def push(self, messages: tuple[dict, ...]) -> None:
        self.session.push(messages)

    def close(self) -> None:
        self.session.close()


async def _forward_ws(target: str, request: HTTPRequest, request_id: str) -> _InProcess:
    session = WebSocketSession(_app, request)
    return _InProcess(session, await session.first())


async def _no_http(target: str, request: HTTPRequest, request_id: str) -> HTTPResponse:
    raise AssertionError("no HTTP in these tests")


class _Observer:
    tracing = False

    def __init__(self) -> None:
        self.ends: list[tuple[str, str, int]] = []

    def begin(self, scope: dict, request_id: str) -> Any:
        return None

    def end(self, token: Any, method: str, route: str, target: str | None, status: int, started: float,
            request_id: str, path: str) -> None:
        self.ends.append((method, route, status))


def test_websockets_through_the_proxy_server() -> None:
    async def main() -> None:
        observer = _Observer()
        server = ProxyServer("127.0.0.1", 0, _no_http, forward_websocket=_forward_ws, root_path="/serve",
                             observer=observer)  # type: ignore[arg-type]
        await server.start()
        server.set_routes({"/chat": "chat"})
        base = f"ws://127.0.0.1:{server.port}/serve"
        try:
            async with connect(f"{base}/chat/room") as ws:
                assert await ws.recv() == "path=/serve/chat/room root=/serve/chat"
                for word in ("abc", "xyz"):
                    await ws.send(word)
                    assert await ws.recv() == word[::-1]
                await ws.send("bye")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "asked to")
            async with connect(f"{base}/chat") as ws:
                await ws.recv()
                await ws.close(code=4100)
            for _ in range(200):
                if ended:
                    break
                await asyncio.sleep(0.01)
            assert ended == [4100]
            for path in ("/chat/refuse", "/elsewhere"):
                with pytest.raises(InvalidStatus) as refused:
                    await connect(f"{base}{path}")
                assert refused.value.response.status_code == 403
            for _ in range(200):
                if len(observer.ends) == 4:
                    break
                await asyncio.sleep(0.01)
            assert observer.ends == [("WEBSOCKET", "/chat", 101), ("WEBSOCKET", "/chat", 101),
                                     ("WEBSOCKET", "/chat", 403), ("WEBSOCKET", "", 404)]
            assert server.in_flight == 0
        finally:
            await server.stop(1.0)

    asyncio.run(main())
