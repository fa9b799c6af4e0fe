"""HTTP/1.1 from raw sockets: send bytes as they are, read back exactly one response.

`read_response` parses one response (status line, headers, a body by Content-Length or
chunked) from a socket and the bytes already read, and returns the bytes left after it,
so pipelined responses can be read one after the other. `exchange` sends a request on a
new connection and reads one response, then whether the server closed the connection and
anything it sent after the response (nothing, for a server that is not fooled).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

__all__ = ["RawResponse", "exchange", "read_response"]


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    closed: bool = False  # the server closed the connection after this response
    rest: bytes = b""  # what came after it before the close


def _more(sock: socket.socket, buffer: bytes) -> bytes:
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError(f"the connection closed in the middle of a response: {buffer[:300]!r}")
    return buffer + chunk


def read_response(sock: socket.socket, buffer: bytes = b"") -> tuple[RawResponse, bytes]:
    while b"\r\n\r\n" not in buffer:
        buffer = _more(sock, buffer)
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    status_line, *lines = head.split(b"\r\n")
    status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in buffer:
                buffer = _more(sock, buffer)
            size_line, buffer = buffer.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            while len(buffer) < size + 2:
                buffer = _more(sock, buffer)
            body, buffer = body + buffer[:size], buffer[size + 2:]
            if size == 0:
                break
    else:
        length = int(headers.get(b"content-length", b"0"))
        while len(buffer) < length:
            buffer = _more(sock, buffer)
        body, buffer = buffer[:length], buffer[length:]
    return RawResponse(status, headers, body), buffer


def exchange(port: int, raw: bytes, host: str = "127.0.0.1", timeout: float = 10.0,
             linger_s: float = 1.0) -> RawResponse:
    """Send `raw` on a new connection; the first response, whether the server then closed
    the connection (within `linger_s`), and any bytes it sent after the response."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (and closed) before reading it all
        answer, rest = read_response(s)
        s.settimeout(linger_s)
        closed = False
        try:
            while chunk := s.recv(65536):
                rest += chunk
            closed = True
        except TimeoutError:
            pass
        except ConnectionResetError:
            closed = True
    return RawResponse(answer.status, answer.headers, answer.body, closed, rest)
