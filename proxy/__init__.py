"""proxy: the HTTP side of serving: a uvicorn server in front of a compiled prefix trie,
forwarding requests through a callable the serving layer provides."""

from ._asgi import BUILTIN_PATHS, MiddlewareError
from ._codec import run_asgi, to_http_response, to_starlette_request
from ._observe import REQUEST_ID_HEADER, RequestObserver, current_request_id, new_request_id, request_id_of
from ._routes import Match, Route, RouteTable
from ._server import ProxyServer
from ._stream import ChunkPump, ResponseStream, StreamBody, iterate_in_thread
from ._websocket import WebSocketSession, WebSocketSessions, WebSocketStream
from .messages import HTTPChunks, HTTPRequest, HTTPResponse, HTTPStreamStart, WebSocketMessages, WebSocketStart

__all__ = ["BUILTIN_PATHS", "ChunkPump", "HTTPChunks", "HTTPRequest", "HTTPResponse", "HTTPStreamStart", "Match", "MiddlewareError",
           "ProxyServer", "REQUEST_ID_HEADER", "RequestObserver", "ResponseStream", "Route", "RouteTable", "StreamBody",
           "WebSocketMessages", "WebSocketSession", "WebSocketSessions", "WebSocketStart", "WebSocketStream",
           "current_request_id", "iterate_in_thread", "new_request_id", "request_id_of", "run_asgi", "to_http_response",
           "to_starlette_request"]
