"""Streamed HTTP responses, end to end with a real client: chunks reach the client as the
replica produces them (a chunk is read before the next one exists), the client leaving
closes the iterator on the replica, a failure midway cuts the response, and the stream
counts as in flight on its replica while it lasts."""

from __future__ import annotations

import itertools

import httpx
import pytest
from fastapi import FastAPI
from starlette.responses import StreamingResponse

import actors
import serve

from ..conftest import free_port, wait_until
from ._signals import Signals

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]
_keys = itertools.count()


@serve.deployment(route_prefix="/stream", max_ongoing_requests=1, max_queued_requests=0)
class Streamer:
    def __init__(self, signals: actors.ActorHandle) -> None:
        self.signals = signals

    async def _agen(self, key: str):
        completed = False
        try:
            yield "first;"
            await self.signals.wait.remote(key)
            yield "last"
            completed = True
        finally:  # "closed": stopped before its end
            self.signals.record.remote(f"{'finished' if completed else 'closed'} {key}")

    def _gen(self, key: str):  # sync: runs on a thread, so it may block
        completed = False
        try:
            yield b"first;"
            actors.get(self.signals.wait.remote(key), timeout=60)
            yield b"last"
            completed = True
        finally:
            self.signals.record.remote(f"{'finished' if completed else 'closed'} {key}")

    async def _failing(self, key: str):
        yield "part;"
        await self.signals.wait.remote(key)
        raise ValueError("the model broke midway")

    async def __call__(self, request):
        kind, key = request.query_params["kind"], request.query_params["key"]
        if kind == "quick":
            return "quick"
        if kind == "async_gen":
            return self._agen(key)
        if kind == "sync_gen":
            return self._gen(key)
        if kind == "streaming_async":
            return StreamingResponse(self._agen(key), media_type="text/event-stream", headers={"x-kind": kind})
        if kind == "streaming_sync":
            return StreamingResponse(self._gen(key), media_type="text/event-stream", headers={"x-kind": kind})
        if kind == "failing":
            return self._failing(key)
        raise ValueError(kind)


app = FastAPI()


@serve.deployment(route_prefix="/api")
@serve.ingress(app)
class StreamingApi:
    def __init__(self, signals: actors.ActorHandle) -> None:
        self.signals = signals

    @app.get("/tokens/{key}")
    def tokens(self, key: str):
        async def gen():
            completed = False
            try:
                yield "first;"
                await self.signals.wait.remote(key)
                yield "last"
                completed = True
            finally:
                self.signals.record.remote(f"{'finished' if completed else 'closed'} {key}")

        return StreamingResponse(gen(), media_type="text/plain")


@pytest.fixture(scope="module")
def served():
    port = free_port()
    serve.start(http_options={"port": port})
    signals = Signals.remote()
    serve.run(Streamer.bind(signals), name="streamer")
    serve.run(StreamingApi.bind(signals), name="api")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30, read=20)) as client:
        wait_until(lambda: len(client.get("/-/routes").json()) == 2, timeout=30, what="the routes at the proxy")
        yield client, signals
    serve.shutdown()


def _log(signals: actors.ActorHandle) -> list[str]:
    return actors.get(signals.recorded.remote(), timeout=10)


def _first_then_rest(client: httpx.Client, signals: actors.ActorHandle, url: str, params: dict, key: str):
    with client.stream("GET", url, params=params) as r:
        chunks = r.iter_raw()
        first = next(chunks)  # arrives while the producer waits for the signal: streamed
        actors.get(signals.send.remote(key), timeout=10)
        rest = b"".join(chunks)
        return r, first, rest


@pytest.mark.parametrize(("kind", "content_type"), [
    ("async_gen", "text/plain; charset=utf-8"),
    ("sync_gen", "text/plain; charset=utf-8"),
    ("streaming_async", "text/event-stream; charset=utf-8"),
    ("streaming_sync", "text/event-stream; charset=utf-8"),
])
def test_chunks_reach_the_client_before_the_stream_produces_the_next(served, kind: str, content_type: str) -> None:
    client, signals = served
    key = f"{kind}-{next(_keys)}"
    r, first, rest = _first_then_rest(client, signals, "/stream", {"kind": kind, "key": key}, key)
    assert (r.status_code, first, rest) == (200, b"first;", b"last")
    assert r.headers["content-type"] == content_type
    assert r.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.headers
    if kind.startswith("streaming"):
        assert r.headers["x-kind"] == kind
    wait_until(lambda: f"finished {key}" in _log(signals), timeout=20, what="the generator to finish")


def test_an_ingress_apps_streaming_response_is_streamed(served) -> None:
    client, signals = served
    key = f"api-{next(_keys)}"
    r, first, rest = _first_then_rest(client, signals, f"/api/tokens/{key}", {}, key)
    assert (r.status_code, first, rest) == (200, b"first;", b"last")
    wait_until(lambda: f"finished {key}" in _log(signals), timeout=20, what="the app's generator to finish")


def test_a_client_leaving_an_ingress_apps_stream_stops_the_app(served) -> None:
    client, signals = served
    key = f"api-leave-{next(_keys)}"
    with client.stream("GET", f"/api/tokens/{key}") as r:
        chunks = r.iter_raw()
        assert next(chunks) == b"first;"
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the app's generator to be closed")


@pytest.mark.parametrize("kind", ["async_gen", "sync_gen"])
def test_a_client_leaving_midstream_closes_the_iterator_on_the_replica_and_frees_its_slot(served, kind: str) -> None:
    client, signals = served
    key = f"leave-{kind}-{next(_keys)}"
    with client.stream("GET", "/stream", params={"kind": kind, "key": key}) as r:
        chunks = r.iter_raw()  # (kept: a dropped iterator closes the response)
        assert next(chunks) == b"first;"
        # while it streams, the stream holds the replica's one slot (max_ongoing_requests=1,
        # max_queued_requests=0): another request is refused with 503 at once
        assert client.get("/stream", params={"kind": "quick", "key": "-"}).status_code == 503
    # the client left (the response closed unfinished): the stream is closed on the replica,
    # which frees its slot, and the generator is closed
    wait_until(lambda: client.get("/stream", params={"kind": "quick", "key": "-"}).status_code == 200, timeout=20,
               what="the replica's slot to be free again")
    if kind == "sync_gen":  # its blocked next() returns first; it is closed at the yield after
        actors.get(signals.send.remote(key), timeout=10)
    wait_until(lambda: f"closed {key}" in _log(signals), timeout=20, what="the generator to be closed")
    assert f"finished {key}" not in _log(signals)


def test_a_failure_midstream_cuts_the_response_and_everything_keeps_serving(served) -> None:
    client, signals = served
    key = f"fail-{next(_keys)}"
    with client.stream("GET", "/stream", params={"kind": "failing", "key": key}) as r:
        chunks = r.iter_raw()
        assert next(chunks) == b"part;"
        actors.get(signals.send.remote(key), timeout=10)
        with pytest.raises(httpx.RemoteProtocolError):  # no final chunk: the client knows it is cut
            b"".join(chunks)
    wait_until(lambda: client.get("/stream", params={"kind": "quick", "key": "-"}).text == "quick", timeout=20,
               what="the replica and the proxy to serve again")
    assert client.get("/-/healthz").text == "success"
