"""WebSockets through the proxy to `@serve.ingress` apps (issue 14, item 16), with a real
proxy, replica and websocket client: Ray 2.x's documented echo example ported by the
renaming rule, both directions streaming, close codes carried each way, a refused
handshake, Starlette websocket routes, and the app hearing of a client that left; a
websocket to a deployment that is not an ingress is refused 403 with nothing logged."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import actors
import serve
from actors.system import local_cluster

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]


@actors.remote
class Seen:
    def __init__(self) -> None:
        self.events: list[str] = []

    async def record(self, what: str) -> None:
        self.events.append(what)

    async def all(self) -> list[str]:
        return list(self.events)


@pytest.fixture(scope="module")
def port():
    port = free_port()
    serve.start(http_options={"port": port})
    yield port
    serve.shutdown()


def _route(port: int, prefix: str) -> None:
    wait_until(lambda: prefix in httpx.get(f"http://127.0.0.1:{port}/-/routes", timeout=10).json(), timeout=30,
               what=f"route {prefix}")


# -- Ray 2.x's documented example (HTTP guide, "WebSockets"), by the renaming rule -----------------
app = FastAPI()


@serve.deployment
@serve.ingress(app)
class EchoServer:
    @app.websocket("/")
    async def echo(self, ws: WebSocket):
        await ws.accept()

        try:
            while True:
                text = await ws.receive_text()
                await ws.send_text(text)
        except WebSocketDisconnect:
            print("Client disconnected.")


def test_rays_websocket_echo_example(port) -> None:
    serve.run(EchoServer.bind(), name="p14-ws-echo", route_prefix="/")
    _route(port, "/")
    with connect(f"ws://127.0.0.1:{port}") as websocket:
        websocket.send("Eureka!")
        assert websocket.recv(timeout=30) == "Eureka!"

        websocket.send("I've found it!")
        assert websocket.recv(timeout=30) == "I've found it!"
    serve.delete("p14-ws-echo")


def test_an_open_websocket_holds_its_replicas_slot_until_it_closes(port) -> None:
    serve.run(EchoServer.options(name="OneAtATime", max_ongoing_requests=1, max_queued_requests=0).bind(),
              name="p14-ws-one", route_prefix="/one")
    _route(port, "/one")
    for _ in range(2):  # the slot is given back when a websocket closes (its app ends just after)
        with wait_until(lambda: _open(port, "/one"), timeout=30, what="the replica's slot to be free") as ws:
            ws.send("a")
            assert ws.recv(timeout=30) == "a"
            # while it is open, the replica is full: another handshake is refused
            with pytest.raises(InvalidStatus):
                connect(f"ws://127.0.0.1:{port}/one")
    serve.delete("p14-ws-one")


def _open(port: int, path: str):
    try:
        return connect(f"ws://127.0.0.1:{port}{path}")
    except InvalidStatus:
        return None


# -- both directions, close codes, refusals, disconnects -----------------------------------------
chat = FastAPI()


@serve.deployment
@serve.ingress(chat)
class Chat:
    def __init__(self, seen) -> None:
        self.seen = seen
        self.greeting = "welcome"

    @chat.websocket("/ticks/{n}")
    async def ticks(self, ws: WebSocket, n: int):
        """Streams n messages without being asked, then closes with a code of its own."""
        await ws.accept(subprotocol=ws.scope["subprotocols"][0] if ws.scope["subprotocols"] else None)
        for i in range(n):
            await ws.send_json({"tick": i, "path": ws.url.path})
        await ws.close(code=4001, reason="ticks done")

    @chat.websocket("/talk")
    async def talk(self, ws: WebSocket):
        """Answers each message (text or bytes) while the client streams; records how it ended."""
        await ws.accept()
        await ws.send_text(self.greeting)
        try:
            while True:
                message = await ws.receive()
                if message["type"] == "websocket.disconnect":
                    await self.seen.record.remote(f"disconnect {message.get('code')}")
                    return
                if message.get("bytes") is not None:
                    await ws.send_bytes(message["bytes"][::-1])
                else:
                    await ws.send_text(message["text"].upper())
        except asyncio.CancelledError:
            await asyncio.shield(self.seen.record.remote("cancelled"))
            raise

    @chat.websocket("/refuse")
    async def refuse(self, ws: WebSocket):
        await ws.close(code=1008)

    @chat.websocket("/fail")
    async def fail(self, ws: WebSocket):
        await ws.accept()
        raise ValueError("the model broke")

    @chat.get("/plain")
    def plain(self) -> dict:
        return {"http": "still works"}


@pytest.fixture(scope="module")
def chat_app(port):
    seen = Seen.remote()
    serve.run(Chat.bind(seen), name="p14-ws-chat", route_prefix="/chat")
    _route(port, "/chat")
    yield port, seen
    serve.delete("p14-ws-chat")


def test_the_server_streams_messages_and_its_close_code_reaches_the_client(chat_app) -> None:
    port, _ = chat_app
    with connect(f"ws://127.0.0.1:{port}/chat/ticks/50", subprotocols=["ticks.v1"]) as ws:
        assert ws.subprotocol == "ticks.v1"
        got = [ws.recv(timeout=30) for _ in range(50)]
        assert got[0] == '{"tick":0,"path":"/chat/ticks/50"}' and got[-1].startswith('{"tick":49')
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "ticks done")


def test_both_directions_stream_text_and_bytes(chat_app) -> None:
    port, _ = chat_app
    with connect(f"ws://127.0.0.1:{port}/chat/talk") as ws:
        assert ws.recv(timeout=30) == "welcome"
        for i in range(20):  # the client streams; each answer comes back in order
            ws.send(f"m{i}")
        assert [ws.recv(timeout=30) for _ in range(20)] == [f"M{i}" for i in range(20)]
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=30) == b"\x03\x02\x01"
    assert httpx.get(f"http://127.0.0.1:{port}/chat/plain").json() == {"http": "still works"}


def test_the_clients_close_code_reaches_the_app(chat_app) -> None:
    port, seen = chat_app
    with connect(f"ws://127.0.0.1:{port}/chat/talk") as ws:
        assert ws.recv(timeout=30) == "welcome"
        ws.close(code=4321, reason="bye")
    wait_until(lambda: "disconnect 4321" in actors.get(seen.all.remote()), timeout=30,
               what="the app to get the client's close code")


def test_a_client_that_vanishes_is_a_disconnect_at_the_app(chat_app) -> None:
    port, seen = chat_app
    with connect(f"ws://127.0.0.1:{port}/chat/talk") as ws:
        assert ws.recv(timeout=30) == "welcome"
        ws.socket.close()  # no close frame: the connection just ends
    wait_until(lambda: any(e.startswith("disconnect 100") for e in actors.get(seen.all.remote())), timeout=30,
               what="the app to hear of the lost connection")


def test_a_refused_handshake_and_an_unknown_route_are_403(chat_app) -> None:
    port, _ = chat_app
    for path in ("/chat/refuse", "/nowhere-at-all"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}{path}")
        assert refused.value.response.status_code == 403


def test_an_app_failing_after_accepting_closes_with_1011(chat_app) -> None:
    port, _ = chat_app
    with connect(f"ws://127.0.0.1:{port}/chat/fail") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd.code == 1011


# -- a Starlette app's websocket route ------------------------------------------------------------
async def _unused(ws) -> None:  # (a plain route of the app, not the class's)
    await ws.close()


starlette_app = Starlette(routes=[WebSocketRoute("/other", _unused)])


class _StarletteSocket:
    def __init__(self) -> None:
        self.prefix = "echo: "

    async def echo(self, ws) -> None:
        await ws.accept()
        async for text in ws.iter_text():
            await ws.send_text(self.prefix + text)


starlette_app.router.routes.append(WebSocketRoute("/echo", _StarletteSocket.echo))  # before serve.ingress claims it
StarletteSocket = serve.deployment(serve.ingress(starlette_app)(_StarletteSocket))


def test_a_starlette_websocket_route_of_an_ingress_class(port) -> None:
    serve.run(StarletteSocket.bind(), name="p14-ws-star", route_prefix="/star")
    _route(port, "/star")
    with connect(f"ws://127.0.0.1:{port}/star/echo") as ws:
        ws.send("hi")
        assert ws.recv(timeout=30) == "echo: hi"
    serve.delete("p14-ws-star")


# -- a deployment that is not an ingress takes no websockets ---------------------------------------
@serve.deployment
class PlainHello:
    def __call__(self, request) -> str:
        return "hi"


def _tails(paths: list[Path], start: dict[Path, int]) -> dict[str, list[str]]:
    """What each file got since `start` (its size then; 0 for a file that was not there)."""
    tails = {}
    for path in paths:
        with path.open("rb") as f:
            f.seek(start.get(path, 0))
            tails[path.name] = f.read().decode(errors="replace").splitlines()
    return tails


def test_a_websocket_to_a_deployment_that_is_not_an_ingress_is_403_with_nothing_logged(port) -> None:
    serve.run(PlainHello.bind(), name="p14-ws-plain", route_prefix="/plain-ws")
    _route(port, "/plain-ws")
    assert httpx.get(f"http://127.0.0.1:{port}/plain-ws", timeout=10).text == "hi"
    cluster = local_cluster()
    assert cluster is not None
    logs = cluster.session.logs

    def files() -> list[Path]:
        return [p for pattern in ("proxy_*", "replica_p14-ws-plain_PlainHello_*") for p in logs.glob(pattern)
                if p.suffix in (".log", ".err")]

    before = {p: p.stat().st_size for p in files()}
    ids = [f"ws-plain-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for rid in ids:
        with pytest.raises(InvalidStatus) as refused:
            connect(f"ws://127.0.0.1:{port}/plain-ws/x", additional_headers={"X-Request-ID": rid}, open_timeout=30)
        assert refused.value.response.status_code == 403
    assert httpx.get(f"http://127.0.0.1:{port}/plain-ws", timeout=10).text == "hi"  # HTTP is served as before

    def access_lines() -> list[str] | None:  # the proxy's access line of each attempt, once flushed
        lines = [line for tail in _tails(files(), before).values() for line in tail
                 if "serve.access: WEBSOCKET" in line and any(rid in line for rid in ids)]
        return lines if len(lines) >= len(ids) else None

    lines = wait_until(access_lines, timeout=30, what="the access lines of the refused websockets")
    assert all(" 403 " in line for line in lines), lines
    noise = {name: [line for line in tail if "Traceback" in line or " WARNING " in line or " ERROR " in line]
             for name, tail in _tails(files(), before).items()}
    assert not any(noise.values()), noise
    serve.delete("p14-ws-plain")
