"""Issue 14 item 11, the logic: a replica's driver of the ASGI lifespan (`serve._data.lifespan`)
against real FastAPI/Starlette apps, without processes."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI
from starlette.requests import Request

from serve._data.lifespan import Lifespan, LifespanError


def test_lifespan_context_runs_around_the_apps_life() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app):
        events.append("startup")
        yield {"model": "loaded"}
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    async def main() -> None:
        life = Lifespan(app)
        await life.start()
        assert events == ["startup"] and life.supported
        await life.stop(5)
        assert events == ["startup", "shutdown"]

    asyncio.run(main())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_on_event_handlers_run() -> None:
    events: list[str] = []
    app = FastAPI()
    app.on_event("startup")(lambda: events.append("up"))
    app.on_event("shutdown")(lambda: events.append("down"))

    async def main() -> None:
        life = Lifespan(app)
        await life.start()
        assert events == ["up"]
        await life.stop(5)
        assert events == ["up", "down"]

    asyncio.run(main())


def test_a_failing_startup_raises_with_its_traceback() -> None:
    @asynccontextmanager
    async def lifespan(app):
        raise ConnectionError("the model store is unreachable")
        yield

    async def main() -> None:
        with pytest.raises(LifespanError) as info:
            await Lifespan(FastAPI(lifespan=lifespan)).start()
        text = str(info.value)
        assert "startup failed" in text and "Traceback" in text
        assert "ConnectionError: the model store is unreachable" in text

    asyncio.run(main())


def test_an_app_without_lifespan_support_is_no_error() -> None:
    async def bare_app(scope, receive, send):
        assert scope["type"] == "http"  # raises at once on "lifespan"

    async def main() -> None:
        life = Lifespan(bare_app)
        await life.start()
        assert not life.supported
        await life.stop(1)

    asyncio.run(main())


def test_lifespan_state_reaches_each_request() -> None:
    @asynccontextmanager
    async def lifespan(app):
        yield {"model": "m1"}

    app = FastAPI(lifespan=lifespan)
    seen: list[str] = []

    @app.get("/")
    async def root(request: Request):
        seen.append(request.state.model)
        return "ok"

    async def main() -> None:
        life = Lifespan(app)
        await life.start()
        sent: list[dict] = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": "GET", "path": "/", "raw_path": b"/", "root_path": "", "query_string": b"",
                 "headers": [], "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
                 "http_version": "1.1", "asgi": {"version": "3.0"}}
        await life.app(scope, receive, send)
        assert sent[0]["status"] == 200
        await life.stop(5)

    asyncio.run(main())
    assert seen == ["m1"]
