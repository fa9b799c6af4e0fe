"""What crosses from the proxy to a replica and back: one HTTP request, one response."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HTTPRequest", "HTTPResponse"]


@dataclass(frozen=True, slots=True)
class HTTPRequest:
    method: str
    path: str  # after the matched route prefix (always starts with "/")
    root_path: str  # the matched route prefix ("" for "/")
    query_string: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    scheme: str = "http"
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    http_version: str = "1.1"

    def __reduce__(self):  # positional rebuild: much cheaper than the dataclass state protocol
        return (HTTPRequest, (self.method, self.path, self.root_path, self.query_string, self.headers, self.body,
                              self.scheme, self.client, self.server, self.http_version))


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    def __reduce__(self):
        return (HTTPResponse, (self.status, self.headers, self.body))
