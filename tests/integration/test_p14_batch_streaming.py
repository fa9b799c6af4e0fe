"""`@serve.batch` on async generators through real replicas (issue 14, item 13): callers
batched together each get their own stream, through handles (`stream=True`) and over HTTP
(a StreamingResponse over the batched generator)."""

from __future__ import annotations

import asyncio
import concurrent.futures

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import StreamingResponse

import serve
from serve.handle import DeploymentHandle

from ..conftest import free_port, wait_until

pytestmark = [pytest.mark.usefixtures("cluster"), pytest.mark.timeout(120)]


@serve.deployment(max_ongoing_requests=50)
class Counter:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.5)
    async def count_to(self, limits: list[int]):
        self.sizes.append(len(limits))
        for i in range(max(limits)):
            yield [f"{i};" if i < n else StopIteration for n in limits]
            await asyncio.sleep(0.01)

    async def __call__(self, request: Request) -> StreamingResponse:
        return StreamingResponse(self.count_to(int(request.query_params["n"])), media_type="text/plain")

    def batch_sizes(self) -> list[int]:
        return self.sizes


@pytest.fixture(scope="module")
def served():
    port = free_port()
    serve.start(http_options={"port": port})
    handle = serve.run(Counter.bind(), name="counter", route_prefix="/count")
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=httpx.Timeout(30)) as client:
        wait_until(lambda: "/count" in client.get("/-/routes").json(), timeout=30, what="the route at the proxy")
        yield handle, client
    serve.shutdown()


def test_batched_callers_each_stream_their_own_items_through_handles(served) -> None:
    handle: DeploymentHandle = served[0]
    before = len(handle.batch_sizes.remote().result(timeout_s=10))

    async def main() -> list[list[str]]:
        async def one(n: int) -> list[str]:
            return [item async for item in handle.options(stream=True).count_to.remote(n)]
        return await asyncio.gather(*(one(n) for n in (2, 5, 1, 3)))

    assert asyncio.run(main()) == [[f"{i};" for i in range(n)] for n in (2, 5, 1, 3)]
    sizes = handle.batch_sizes.remote().result(timeout_s=10)[before:]
    assert sum(sizes) == 4 and max(sizes) > 1, sizes  # batched together, streamed apart


def test_batched_callers_each_stream_their_own_body_over_http(served) -> None:
    handle, client = served
    before = len(handle.batch_sizes.remote().result(timeout_s=10))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        bodies = list(pool.map(lambda n: client.get("/count", params={"n": n}).text, (3, 1, 4, 2)))
    assert bodies == ["".join(f"{i};" for i in range(n)) for n in (3, 1, 4, 2)]
    sizes = handle.batch_sizes.remote().result(timeout_s=10)[before:]
    assert sum(sizes) == 4 and max(sizes) > 1, sizes
