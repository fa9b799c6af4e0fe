"""The replica side of a websocket (`proxy._websocket`), without processes: a session runs
an ASGI app on a websocket scope, hands over what it sends in batches (bounded ahead of the
pulls), feeds it what the proxy pushes, and ends with the right close however the app ends."""

from __future__ import annotations

import asyncio
from typing import Any

from proxy import HTTPRequest, WebSocketSession, WebSocketSessions
from proxy._websocket import MAX_AHEAD

REQ = HTTPRequest("GET", "/x", "/ws", b"a=1", ((b"sec-websocket-protocol", b"p1, p2"),), b"", "ws")


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _drain(session: WebSocketSession) -> list[dict]:
    out: list[dict] = []
    while True:
        batch = await asyncio.wait_for(session.pull(), 5)
        out += batch.messages
        if batch.done:
            return out


def test_the_app_sees_the_scope_and_echoes_pushed_messages_then_closes_with_its_code() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        assert (scope["type"], scope["path"], scope["root_path"], scope["subprotocols"]) == (
            "websocket", "/ws/x", "/ws", ["p1", "p2"])
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "p2"})
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"].upper()})
        await send({"type": "websocket.close", "code": 4001, "reason": "done"})

    async def main() -> None:
        session = WebSocketSession(app, REQ)
        assert await session.first() == {"type": "websocket.accept", "subprotocol": "p2"}
        session.push(({"type": "websocket.receive", "text": "hi"},))
        assert await _drain(session) == [{"type": "websocket.send", "text": "HI"},
                                         {"type": "websocket.close", "code": 4001, "reason": "done"}]

    _run(main())


def test_an_app_failing_before_accepting_refuses_and_after_accepting_closes_1011() -> None:
    async def early(scope: dict, receive: Any, send: Any) -> None:
        raise ValueError("no")

    async def late(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        raise ValueError("no")

    async def quiet(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})

    async def main() -> None:
        assert (await WebSocketSession(early, REQ).first())["code"] == 1011
        session = WebSocketSession(late, REQ)
        assert (await session.first())["type"] == "websocket.accept"
        assert [m["code"] for m in await _drain(session)] == [1011]
        session = WebSocketSession(quiet, REQ)  # returns without closing: a normal close
        await session.first()
        assert [m["code"] for m in await _drain(session)] == [1000]

    _run(main())


def test_an_app_sending_ahead_of_the_pulls_waits_and_nothing_is_lost() -> None:
    sent: list[int] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "websocket.accept"})
        for i in range(3 * MAX_AHEAD):
            await send({"type": "websocket.send", "text": str(i)})
            sent.append(i)

    async def main() -> None:
        session = WebSocketSession(app, REQ)
        await session.first()
        for _ in range(20):
            await asyncio.sleep(0)
        assert len(sent) <= MAX_AHEAD  # bounded while nobody pulls
        texts = [m["text"] for m in await _drain(session) if m["type"] == "websocket.send"]
        assert texts == [str(i) for i in range(3 * MAX_AHEAD)]

    _run(main())


def test_a_closed_session_tells_the_app_of_the_disconnect_and_gives_its_slot_back() -> None:
    async def app(scope: dict, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        heard.append(await receive())

    heard: list[dict] = []
    released: list[int] = []

    async def main() -> None:
        sessions = WebSocketSessions(lambda: released.append(1))
        start = await sessions.open(WebSocketSession(app, REQ))
        assert start.first["type"] == "websocket.accept" and len(sessions) == 1
        sessions.close(start.session_id)
        for _ in range(20):
            await asyncio.sleep(0)
        assert heard == [{"type": "websocket.disconnect", "code": 1006}]
        assert released == [1] and len(sessions) == 0
        gone = await sessions.pull(start.session_id)  # a late pull: the session is over
        assert gone.done

    _run(main())
