"""HTTP through the proxy with a real client: routing, requests, responses, errors."""

from __future__ import annotations

import httpx
import pytest
from starlette.responses import JSONResponse, PlainTextResponse

import serve

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]


@pytest.fixture
def http():
    port = free_port()
    serve.start(http_options={"port": port})
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    serve.shutdown()


def _routes(client: httpx.Client, n: int) -> dict:
    def table() -> dict | None:
        routes = client.get("/-/routes").json()
        return routes if len(routes) == n else None

    return wait_until(table, timeout=20, what=f"{n} routes at the proxy")


@serve.deployment
class Echo:
    async def __call__(self, request):
        return {"method": request.method, "path": request.url.path, "root_path": request.scope["root_path"],
                "query": dict(request.query_params), "body": (await request.body()).decode(),
                "header": request.headers.get("x-test")}


@serve.deployment(route_prefix="/kinds")
class Kinds:
    def __call__(self, request):
        kind = request.query_params["kind"]
        if kind == "text":
            return "plain text"
        if kind == "bytes":
            return b"\x00\x01"
        if kind == "response":
            return PlainTextResponse("teapot", status_code=418)
        if kind == "json_response":
            return JSONResponse({"ok": True}, status_code=201)
        if kind == "generator":
            return (f"{i}," for i in range(3))
        if kind == "error":
            raise ValueError("bad input for this model")
        return {"numbers": [1, 2, 3]}


def test_requests_reach_the_deployment_with_method_path_query_body_headers(http) -> None:
    serve.run(Echo.bind(), route_prefix="/Echo")
    _routes(http, 1)
    r = http.post("/Echo/sub/path?x=1&y=two", content=b"payload", headers={"x-test": "yes"})
    assert r.status_code == 200
    assert r.json() == {"method": "POST", "path": "/sub/path", "root_path": "/Echo", "query": {"x": "1", "y": "two"},
                        "body": "payload", "header": "yes"}
    assert http.get("/Echo").json()["path"] == "/"
    assert http.get("/Echoes").status_code == 404  # prefixes match on segment boundaries


@pytest.mark.parametrize(
    ("kind", "status", "content_type", "body"),
    [
        ("text", 200, "text/plain; charset=utf-8", b"plain text"),
        ("bytes", 200, "application/octet-stream", b"\x00\x01"),
        ("response", 418, "text/plain; charset=utf-8", b"teapot"),
        ("json_response", 201, "application/json", b'{"ok":true}'),
        ("generator", 200, "text/plain; charset=utf-8", b"0,1,2,"),
        ("json", 200, "application/json", b'{"numbers": [1, 2, 3]}'),
    ],
)
def test_return_values_map_to_responses(http, kind: str, status: int, content_type: str, body: bytes) -> None:
    serve.run(Kinds.bind())
    _routes(http, 1)
    r = http.get("/kinds", params={"kind": kind})
    assert (r.status_code, r.headers["content-type"], r.content) == (status, content_type, body)


def test_errors_and_builtins(http) -> None:
    serve.run(Kinds.bind())
    routes = _routes(http, 1)
    assert routes == {"/kinds": "Kinds"}
    missing = http.get("/nowhere")
    assert missing.status_code == 404 and "/-/routes" in missing.text
    failed = http.get("/kinds", params={"kind": "error"})
    assert failed.status_code == 500 and "bad input for this model" in failed.text
    assert "Traceback" not in failed.text  # the traceback stays in the replica's log
    assert http.get("/kinds", params={"kind": "text"}).text == "plain text"  # the replica keeps serving
    health = http.get("/-/healthz")
    assert (health.status_code, health.text) == (200, "success")
    for builtin in (health, http.get("/-/routes"), missing):  # whole answers: sized, not chunked
        assert builtin.headers.get("content-length") == str(len(builtin.content))
        assert "transfer-encoding" not in builtin.headers


def test_routes_follow_deploys_and_deletes(http) -> None:
    serve.run(Echo.bind(), name="one", route_prefix="/Echo")
    serve.run(Kinds.bind(), name="two")
    assert _routes(http, 2) == {"/Echo": "Echo", "/kinds": "Kinds"}
    serve.delete("two")
    assert _routes(http, 1) == {"/Echo": "Echo"}
    assert http.get("/kinds").status_code == 404


def test_an_application_is_served_at_root_unless_told_otherwise(http) -> None:
    """Ray 2.x: `serve.run(app)` serves at "/" (its ingress's own route_prefix wins); a
    second application claiming a taken route is refused, naming both; 1.x `deploy()`
    keeps "/{name}"."""
    serve.run(Echo.bind(), name="rooted")
    assert _routes(http, 1) == {"/": "Echo"}
    assert http.get("/any/path").json()["path"] == "/any/path"
    with pytest.raises(serve.exceptions.ConflictError, match=r"'/' is claimed by deployment 'Echo' of application "
                                                              r"'rooted' and by 'Echo' of application 'again'"):
        serve.run(Echo.bind(), name="again")
    assert _routes(http, 1) == {"/": "Echo"}  # nothing changed
    serve.run(Kinds.bind(), name="rooted")  # the same application again: replaced, Echo goes
    assert _routes(http, 1) == {"/kinds": "Kinds"}
    Echo.options(name="Legacy").deploy()
    assert _routes(http, 2) == {"/Legacy": "Legacy", "/kinds": "Kinds"}
    serve.delete("rooted")
    Echo.options(name="Legacy").delete()
    wait_until(lambda: http.get("/-/routes").json() == {}, timeout=20, what="no routes left")


def test_a_port_in_use_fails_serve_start_clearly() -> None:
    import socket

    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port}"):
            serve.start(http_options={"port": port})


def test_wrong_http_options_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match="location must be"):
        serve.start(http_options={"location": "Everywhere"})
    with pytest.raises(ValueError, match="unknown http_options"):
        serve.start(http_options={"prot": 80})


# -- @serve.ingress: Ray Serve 1.x HTTP guide, FastAPI example, ported by renaming -------
from fastapi import FastAPI  # noqa: E402

app = FastAPI()


@serve.deployment(route_prefix="/hello")
@serve.ingress(app)
class MyFastAPIDeployment:
    def __init__(self):
        self.greeting = "Hello"

    @app.get("/")
    def root(self):
        return f"{self.greeting}, world!"

    @app.get("/items/{item_id}")
    async def item(self, item_id: int, q: str | None = None):
        return {"item_id": item_id, "q": q, "by": self.greeting}


def test_fastapi_ingress_methods_with_self_path_params_validation_docs(http) -> None:
    serve.run(MyFastAPIDeployment.bind())
    _routes(http, 1)
    assert http.get("/hello").json() == "Hello, world!"
    assert http.get("/hello/").json() == "Hello, world!"
    assert http.get("/hello/items/7", params={"q": "x"}).json() == {"item_id": 7, "q": "x", "by": "Hello"}
    invalid = http.get("/hello/items/not-a-number")
    assert invalid.status_code == 422 and "item_id" in invalid.text
    assert http.get("/hello/docs").status_code == 200
    schema = http.get("/hello/openapi.json").json()
    assert "/items/{item_id}" in schema["paths"]
    assert "self" not in str(schema["paths"]["/items/{item_id}"]["get"].get("parameters"))


def _raw(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        return s.recv(200).split(b"\r\n")[0]


def test_malformed_requests_and_oversized_headers_are_refused_and_the_proxy_goes_on(http) -> None:
    serve.run(Kinds.bind())
    _routes(http, 1)
    port = http.base_url.port
    assert _raw(port, b"GARBAGE\r\n\r\n") == b"HTTP/1.1 400 Bad Request"
    big = b"GET /kinds?kind=text HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    assert _raw(port, big).startswith(b"HTTP/1.1 431")
    assert http.get("/kinds", params={"kind": "text"}).text == "plain text"
