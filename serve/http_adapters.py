"""serve.http_adapters: turn an HTTP request into a deployment graph's input.

An adapter is `adapter(request: starlette.requests.Request) -> input` (sync or async).
`DAGDriver.bind(graph, http_adapter=...)` takes one (or its import path as a string);
the default is `json_request`. A pydantic model class works as an adapter too: the JSON
body validated into an instance of it (`pydantic_request(Model)`). An adapter that raises `ValueError` (or `TypeError`) makes
the request fail with 400 and the error's message.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

__all__ = ["json_request", "pydantic_request", "starlette_request"]


async def json_request(request: Request) -> Any:
    """The JSON body; a request without a body gives its query parameters as a dict."""
    body = await request.body()
    if not body.strip():
        return dict(request.query_params)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"the request body is not JSON: {e}") from None


async def starlette_request(request: Request) -> Request:
    """The request itself: the graph's input is the `starlette.requests.Request`."""
    return request


def pydantic_request(model: type) -> Any:
    """An adapter validating the JSON body into `model` (a pydantic model class)."""
    validate = getattr(model, "model_validate", None) or getattr(model, "parse_obj", None)
    if validate is None:
        raise TypeError(f"{model!r} is not a pydantic model class")

    async def adapter(request: Request) -> Any:
        return validate(await json_request(request))  # pydantic's ValidationError is a ValueError

    return adapter
