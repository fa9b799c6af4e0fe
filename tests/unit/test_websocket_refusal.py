"""A replica that is not an ASGI ingress takes no websockets (issue 16): it says so when
ready (its methods lack the websocket entry, which an ingress's report has, so routers
refuse without asking it), and a handshake that reaches it anyway (its methods not known
yet) is refused as a handshake its app closes, not raised as an error: the proxy answers
403 and nobody logs a traceback. The replica class runs in-process on a plain event loop."""

from __future__ import annotations

import asyncio
import logging
import pickle
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

import serve
import serve._data.context as context_module
from proxy import HTTPRequest, WebSocketStart
from serve._data.replica import ReplicaActor
from serve.messages import WEBSOCKET_METHOD

pytestmark = pytest.mark.timeout(30)

REQ = HTTPRequest("GET", "/", "/plain", b"", (), b"", "ws")


class Plain:
    def __call__(self, request: Any) -> str:
        return "hi"


app = FastAPI()


@serve.ingress(app)
class Sockets:
    @app.websocket("/")
    async def talk(self, ws: WebSocket) -> None:
        await ws.accept()
        await ws.close()


def _replica(cls: type) -> ReplicaActor:
    return ReplicaActor(cls.__name__, "t1", "app", pickle.dumps((cls, (), {})), None, False, 4)


@pytest.fixture(autouse=True)
def _own_process_context(monkeypatch) -> None:
    monkeypatch.setattr(context_module, "_process_context", None)  # restored after the test


def test_a_plain_deployment_reports_no_websocket_entry_and_refuses_a_handshake_quietly(caplog) -> None:
    async def main() -> None:
        r = _replica(Plain)
        assert WEBSOCKET_METHOD not in (await r.ready())["methods"]
        with caplog.at_level(logging.WARNING):
            start = await r.handle_request(WEBSOCKET_METHOD, (REQ,), {})
        assert type(start) is WebSocketStart and start.first["type"] == "websocket.close"
        assert start.first["code"] == 1008
        assert r._ongoing == 0 and len(r._sockets) == 0  # its slot given back, no session kept
        await r.websocket_close(start.session_id)  # what the proxy does next: nothing to close
        assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING]

    asyncio.run(main())


def test_an_ingress_reports_the_websocket_entry_and_takes_the_handshake() -> None:
    async def main() -> None:
        r = _replica(Sockets)
        assert WEBSOCKET_METHOD in (await r.ready())["methods"]
        start = await r.handle_request(WEBSOCKET_METHOD, (REQ,), {})
        assert start.first["type"] == "websocket.accept"
        await r.websocket_close(start.session_id)

    asyncio.run(main())
