"""proxy: the HTTP side of serving: a uvicorn server in front of a compiled prefix trie,
forwarding requests through a callable the serving layer provides."""

from ._asgi import MiddlewareError
from ._codec import run_asgi, to_http_response, to_starlette_request
from ._routes import Match, Route, RouteTable
from ._server import ProxyServer
from ._stream import ChunkPump, ResponseStream, StreamBody
from .messages import HTTPChunks, HTTPRequest, HTTPResponse, HTTPStreamStart

__all__ = ["ChunkPump", "HTTPChunks", "HTTPRequest", "HTTPResponse", "HTTPStreamStart", "Match", "MiddlewareError",
           "ProxyServer",
           "ResponseStream", "Route", "RouteTable", "StreamBody", "run_asgi", "to_http_response", "to_starlette_request"]
