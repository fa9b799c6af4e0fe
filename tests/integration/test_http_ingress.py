"""HTTP options and FastAPI ingress through the proxy, with a real client: middlewares (the
CORS example of Ray Serve 1.x's HTTP guide), root_path, the guide's FastAPI examples
(ported: `ray.serve` -> `serve`, `ray.init` -> `actors.init`), one FastAPI app shared by
two ingress deployments, and wrong options refused at the call."""

from __future__ import annotations

import os
import pickle
import threading
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Query
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

import actors
import serve

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(180)]

DEFAULT_PORT = int(os.environ["ZEROSERVE_HTTP_PORT"])


@pytest.fixture
def serve_down():
    """Whatever a test starts, Serve is shut down after it."""
    yield
    serve.shutdown()


def _client(port: int = DEFAULT_PORT) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)


def _wait_routes(client: httpx.Client, expected: dict, path: str = "/-/routes") -> None:
    wait_until(lambda: client.get(path).json() == expected, timeout=30, what=f"routes {expected} at the proxy")


@serve.deployment
class Echo:
    async def __call__(self, request):
        return {"path": request.url.path, "root_path": request.scope["root_path"],
                "origin": request.headers.get("origin"), "query": dict(request.query_params)}


# -- middlewares ---------------------------------------------------------------------------

def test_cors_middleware_example_from_the_ray_http_guide(serve_down) -> None:
    # Ported from "Enabling CORS and other HTTP middlewares" (Ray Serve 1.x HTTP guide).
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware

    client = serve.start(
        http_options={"middlewares": [
            Middleware(
                CORSMiddleware, allow_origins=["*"], allow_methods=["*"])
        ]})
    assert client is not None
    assert serve.status()["http_options"]["middlewares"] == [
        "Middleware(CORSMiddleware, allow_origins=['*'], allow_methods=['*'])"]  # as text: drivers need not import it

    serve.run(Echo.bind(), route_prefix="/Echo")
    with _client() as http:
        _wait_routes(http, {"/Echo": "Echo"})
        preflight = http.options("/Echo/x", headers={"Origin": "https://example.com",
                                                      "Access-Control-Request-Method": "PUT"})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "PUT" in preflight.headers["access-control-allow-methods"]
        got = http.get("/Echo/x", params={"a": "1"}, headers={"Origin": "https://example.com"})
        assert got.status_code == 200
        assert got.headers["access-control-allow-origin"] == "*"
        assert got.json() == {"path": "/x", "root_path": "/Echo", "origin": "https://example.com",
                              "query": {"a": "1"}}
        # Responses of the proxy itself pass through the middleware too.
        missing = http.get("/nowhere", headers={"Origin": "https://example.com"})
        assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"


def test_without_middlewares_there_are_no_cors_headers(serve_down) -> None:
    serve.start()
    serve.run(Echo.bind(), route_prefix="/Echo")
    with _client() as http:
        _wait_routes(http, {"/Echo": "Echo"})
        got = http.get("/Echo", headers={"Origin": "https://example.com"})
        assert got.status_code == 200 and "access-control-allow-origin" not in got.headers


def test_middlewares_defined_in_the_driver_run_in_order_around_the_proxy(serve_down) -> None:
    # Classes local to this function reach the proxy by value (cloudpickle).
    class Tag:
        def __init__(self, app, name: str) -> None:
            self.app, self.name = app, name

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.app(scope, receive, send)
            seen = scope["path"]

            async def tagged(message):
                if message["type"] == "http.response.start":
                    headers = list(message.get("headers", []))
                    headers.append((b"x-tags", f"{self.name}:{seen}".encode()))
                    message = dict(message, headers=headers)
                await send(message)

            await self.app(scope, receive, tagged)

    options = serve.HTTPOptions(port=free_port(), root_path="/base",
                                middlewares=[Middleware(Tag, "outer"), Middleware(Tag, name="inner")])
    assert pickle.loads(pickle.dumps(options)).middlewares[0].args == ("outer",)  # the controller's checkpoint
    serve.start(http_options=options)
    serve.run(Echo.bind(), route_prefix="/Echo")
    with _client(options.port) as http:
        _wait_routes(http, {"/Echo": "Echo"})
        got = http.get("/base/Echo/y")
        assert got.json()["path"] == "/y"
        # The inner one adds its header first; both saw the path as the client sent it.
        assert got.headers.get_list("x-tags") == ["inner:/base/Echo/y", "outer:/base/Echo/y"]


# -- root_path -----------------------------------------------------------------------------

app_under_root = FastAPI()


@serve.deployment(route_prefix="/hello")
@serve.ingress(app_under_root)
class Greeter:
    @app_under_root.get("/items/{item_id}")
    def item(self, item_id: int):
        return {"item_id": item_id}

    @app_under_root.get("/where")
    def where(self, request_path: str | None = None):
        return "here"


def test_root_path_mounts_the_proxy_under_a_prefix(serve_down) -> None:
    port = free_port()
    serve.start(http_options={"port": port, "root_path": "/serve"})
    serve.run(Echo.bind(), name="echo", route_prefix="/Echo")
    serve.run(Greeter.bind(), name="greeter")
    with _client(port) as http:
        expected = {"/Echo": "Echo", "/hello": "Greeter"}
        _wait_routes(http, expected, "/serve/-/routes")
        assert http.get("/-/routes").json() == expected  # built-ins also answer at their own paths
        assert http.get("/-/healthz").text == http.get("/serve/-/healthz").text == "success"

        assert serve.get_deployment("Echo").url == f"http://127.0.0.1:{port}/serve/Echo"
        got = http.get("/serve/Echo/sub/path")
        assert got.status_code == 200
        assert got.json()["path"] == "/sub/path" and got.json()["root_path"] == "/serve/Echo"
        assert http.get("/serve/Echo").json()["path"] == "/"

        for outside in ("/Echo", "/Echo/sub/path", "/servex/Echo", "/", "/hello/items/1"):
            r = http.get(outside)
            assert r.status_code == 404, outside
            assert "root_path '/serve'" in r.text
        inside_unknown = http.get("/serve/nowhere")
        assert inside_unknown.status_code == 404 and "/-/routes" in inside_unknown.text
        assert "Path '/serve/nowhere' not found" in inside_unknown.text

        assert http.get("/serve/hello/items/3").json() == {"item_id": 3}
        assert http.get("/serve/hello/items/x").status_code == 422
        docs = http.get("/serve/hello/docs")
        assert docs.status_code == 200 and "/serve/hello/openapi.json" in docs.text
        schema = http.get("/serve/hello/openapi.json").json()
        assert "/items/{item_id}" in schema["paths"]
        assert schema.get("servers") == [{"url": "/serve/hello"}]


def test_cli_urls_include_root_path() -> None:
    from serve._api.startup import base_url  # what zeroserve serve run/deploy/status print

    assert base_url({"host": "127.0.0.1", "port": 8000, "root_path": "/serve"}, None) == "http://127.0.0.1:8000/serve"
    assert base_url({"host": "127.0.0.1", "port": 8000}, None) == "http://127.0.0.1:8000"


# -- FastAPI examples of Ray Serve 1.x's HTTP guide, ported --------------------------------

def test_fastapi_example_multiple_routes_with_methods(serve_down) -> None:
    # Ported from "FastAPI HTTP Deployments": two routes, both methods named `root`.
    from fastapi import FastAPI

    import actors
    import serve

    app = FastAPI()
    actors.init(address="auto", namespace="summarizer")
    serve.start(detached=True)

    @serve.deployment(route_prefix="/hello")
    @serve.ingress(app)
    class MyFastAPIDeployment:
        @app.get("/")
        def root(self):
            return "Hello, world!"

        @app.post("/{subpath}")
        def root(self, subpath: str):  # noqa: F811  (as in the guide: FastAPI keeps both routes)
            return f"Hello from {subpath}!"

    MyFastAPIDeployment.deploy()

    with _client() as http:
        _wait_routes(http, {"/hello": "MyFastAPIDeployment"})
        assert http.get("/hello").json() == "Hello, world!"
        assert http.post("/hello/abc").json() == "Hello from abc!"
        assert http.get("/hello/abc").status_code == 405  # only POST on /{subpath}
        schema = http.get("/hello/openapi.json").json()
        assert set(schema["paths"]) == {"/", "/{subpath}"}
        assert "self" not in str(schema)


def test_fastapi_example_an_existing_app_served_as_is(serve_down) -> None:
    # Ported from "You can also pass in an existing FastAPI app to a deployment".
    from fastapi import FastAPI

    import actors
    import serve

    app = FastAPI()
    actors.init(address="auto", namespace="summarizer")
    serve.start(detached=True)

    @app.get("/")
    def f():
        return "Hello from the root!"

    # ... add more routes, routers, etc. to `app` ...
    @app.get("/items/{n}")
    def items(n: int, q: str = "none"):
        return {"n": n, "q": q}

    @serve.deployment(route_prefix="/")
    @serve.ingress(app)
    class FastAPIWrapper:
        pass

    FastAPIWrapper.deploy()

    with _client() as http:
        _wait_routes(http, {"/": "FastAPIWrapper"})
        assert http.get("/").json() == "Hello from the root!"
        assert http.get("/items/5", params={"q": "x"}).json() == {"n": 5, "q": "x"}
        assert http.get("/items/five").status_code == 422
        assert http.get("/nothing-here").status_code == 404  # the app's own 404 under the catch-all
        assert "/items/{n}" in http.get("/openapi.json").json()["paths"]
        assert http.get("/docs").status_code == 200


# -- one FastAPI app shared by two ingress deployments (module level: replicas import it) ---

shared_app = FastAPI()


@shared_app.get("/")
def shared_root():
    return "Hello from the root!"


@serve.deployment(route_prefix="/api1")
@serve.ingress(shared_app)
class FastAPIWrapper1:
    @shared_app.get("/subpath")
    def method(self):
        return "Hello 1!"


@serve.deployment(route_prefix="/api2")
@serve.ingress(shared_app)
class FastAPIWrapper2:
    @shared_app.get("/subpath")
    def method(self):
        return "Hello 2!"


def test_one_fastapi_app_shared_by_two_ingress_deployments(serve_down) -> None:
    # Ported from the guide's example that combines app routes with deployment routes.
    actors.init(address="auto", namespace="summarizer")
    serve.start(detached=True)
    FastAPIWrapper1.deploy()
    FastAPIWrapper2.deploy()
    with _client() as http:
        _wait_routes(http, {"/api1": "FastAPIWrapper1", "/api2": "FastAPIWrapper2"})
        assert http.get("/api1").json() == "Hello from the root!"
        assert http.get("/api2").json() == "Hello from the root!"
        assert http.get("/api1/subpath").json() == "Hello 1!"
        assert http.get("/api2/subpath").json() == "Hello 2!"
        # Each deployment documents its own routes and the shared root, without `self`.
        for prefix in ("/api1", "/api2"):
            schema = http.get(f"{prefix}/openapi.json").json()
            assert set(schema["paths"]) == {"/", "/subpath"}
            assert "self" not in str(schema["paths"])


def test_shared_app_classes_defined_in_a_function_are_kept_apart(serve_down) -> None:
    # The same, pickled by value (classes local to a function): each replica's app copy.
    app = FastAPI()

    @app.get("/")
    def root():
        return "root"

    def make(n: int):
        @serve.deployment(name=f"Part{n}", route_prefix=f"/part{n}")
        @serve.ingress(app)
        class Part:
            @app.get("/who")
            def who(self):
                return n

        return Part

    serve.start()
    serve.run(make(1).bind(), name="p1")
    serve.run(make(2).bind(), name="p2")
    with _client() as http:
        _wait_routes(http, {"/part1": "Part1", "/part2": "Part2"})
        assert [http.get(f"/part{n}/who").json() for n in (1, 2)] == [1, 2]
        assert http.get("/part2").json() == "root"


# -- ingress classes that reach replicas by value, with string annotations ----------------

class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)


def tax_rate(region: str = "eu") -> float:
    return {"eu": 0.2, "us": 0.1}[region]


class TaggedRoute(APIRoute):
    """A custom FastAPI route class: its routes add a header."""

    def get_route_handler(self):
        handle = super().get_route_handler()

        async def tagged(request):
            response = await handle(request)
            response.headers["x-route-class"] = type(self).__name__
            return response

        return tagged


def test_ingress_class_pickled_by_value_resolves_annotations_where_it_was_defined(serve_down) -> None:
    # This module has `from __future__ import annotations`: every annotation below is a string
    # naming a global of this module, which a class local to a function does not carry along.
    app = FastAPI()
    app.router.route_class = TaggedRoute

    @serve.deployment(route_prefix="/shop")
    @serve.ingress(app)
    class Shop:
        def __init__(self) -> None:
            self.sold: list[str] = []

        @app.post("/items", status_code=201)
        async def sell(self, item: Item, quantity: Annotated[int, Query(ge=1, le=10)] = 1,
                       rate: float = Depends(tax_rate)) -> dict:
            self.sold.append(item.name)
            return {"total": round(item.price * quantity * (1 + rate), 2), "sold": self.sold}

    serve.start()
    serve.run(Shop.bind())
    with _client() as http:
        _wait_routes(http, {"/shop": "Shop"})
        r = http.post("/shop/items", params={"quantity": 2, "region": "us"}, json={"name": "pen", "price": 1.5})
        assert (r.status_code, r.json()) == (201, {"total": 3.3, "sold": ["pen"]})
        assert r.headers["x-route-class"] == "TaggedRoute"  # the route kept its class
        assert http.post("/shop/items", json={"name": "ink", "price": 2}).json()["sold"] == ["pen", "ink"]
        bad = http.post("/shop/items", params={"quantity": 0}, json={"name": "", "price": -1})
        assert bad.status_code == 422
        assert {tuple(e["loc"]) for e in bad.json()["detail"]} == {("query", "quantity"), ("body", "name"),
                                                                   ("body", "price")}
        params = http.get("/shop/openapi.json").json()["paths"]["/items"]["post"]["parameters"]
        assert {p["name"] for p in params} == {"quantity", "region"}  # no `self`


starlette_app = Starlette()


async def starlette_home(request):
    from starlette.responses import PlainTextResponse

    return PlainTextResponse("home")


starlette_app.add_route("/", starlette_home)


@serve.deployment(route_prefix="/st")
@serve.ingress(starlette_app)
class StarletteCounter:
    def __init__(self) -> None:
        self.n = 0

    async def count(self, request):
        from starlette.responses import JSONResponse

        self.n += int(request.query_params.get("by", 1))
        return JSONResponse({"n": self.n, "path": request.url.path})

    starlette_app.add_route("/count", count, methods=["POST"])


def test_starlette_app_ingress_with_method_routes(serve_down) -> None:
    serve.start()
    serve.run(StarletteCounter.bind())
    with _client() as http:
        _wait_routes(http, {"/st": "StarletteCounter"})
        assert http.get("/st").text == "home"
        assert http.post("/st/count", params={"by": 2}).json() == {"n": 2, "path": "/st/count"}
        assert http.post("/st/count").json()["n"] == 3
        assert http.get("/st/count").status_code == 405


# -- wrong options fail at the call --------------------------------------------------------

def test_wrong_middlewares_and_root_path_fail_at_the_call() -> None:
    with pytest.raises(ValueError, match=r"middlewares\[0\] is .*CORSMiddleware.*wrap it: Middleware\(CORSMiddleware"):
        serve.start(http_options={"middlewares": [CORSMiddleware]})
    with pytest.raises(ValueError, match="middlewares must be a list of starlette Middleware"):
        serve.start(http_options={"middlewares": Middleware(CORSMiddleware)})
    with pytest.raises(ValueError, match=r"middlewares\[1\] is 'cors', not a starlette Middleware"):
        serve.HTTPOptions(middlewares=[Middleware(CORSMiddleware), "cors"])
    with pytest.raises(ValueError, match=r"must pickle with cloudpickle.*_thread\.lock"):
        serve.start(http_options={"middlewares": [Middleware(CORSMiddleware, allow_origins=threading.Lock())]})
    with pytest.raises(ValueError, match=r"root_path must be '' or a path starting with '/'.*use '/serve'"):
        serve.start(http_options={"root_path": "serve"})
    with pytest.raises(ValueError, match="root_path must not end with '/': use '/serve'"):
        serve.HTTPOptions(root_path="/serve/")
    with pytest.raises(ValueError, match="root_path must not end with '/': use ''"):
        serve.start(http_options={"root_path": "/"})
    with pytest.raises(ValueError, match="root_path '/a//b' may not contain"):
        serve.start(http_options={"root_path": "/a//b"})
    assert serve.HTTPOptions(root_path=None).root_path == ""


def test_a_middleware_that_cannot_be_built_fails_serve_start_clearly(serve_down) -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match=r"http_options middlewares\[1\] Middleware\(CORSMiddleware, bogus=1\) "
                                           r"could not wrap the proxy's app: TypeError: .*'bogus'"):
        serve.start(http_options={"port": port, "middlewares": [Middleware(CORSMiddleware, allow_origins=["*"]),
                                                               Middleware(CORSMiddleware, bogus=1)]})
    serve.start(http_options={"port": port})  # nothing was left behind
    with _client(port) as http:
        assert http.get("/-/healthz").text == "success"
