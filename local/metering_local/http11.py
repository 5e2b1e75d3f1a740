"""A small HTTP/1.1 server with keep-alive, for the gateway and the embedded AWS endpoint.

`http.server` parses every request's headers with the `email` package (~0.5 ms of CPU
each), and werkzeug's development server, which moto's server uses, closes the
connection after every response, so each boto3 call from a function paid for a new TCP
connection and a new server thread. Here a connection is served by one thread for as
long as the client keeps it open, headers are split by hand, and each answer is written
with one `sendall`.

An application is a callable `app(request) -> (status, headers, body)`; it may set
`request.close = True` to close the connection after its answer.
"""

import email.utils
import socket
import socketserver
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_LINE = 65536
MAX_HEADERS = 200


@dataclass
class Request:
    method: str
    target: str  # path and query, as sent
    version: str
    headers: list[tuple[str, str]]  # in order, names as sent
    body: bytes = b""
    client: tuple = ("127.0.0.1", 0)
    server: tuple = ("127.0.0.1", 0)
    close: bool = False
    lower: dict[str, str] = field(default_factory=dict)  # lower-cased name -> last value

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.lower.get(name.lower(), default)

    def header_dict(self) -> dict[str, str]:
        """Names as sent, the last value of a repeated header (what `dict(message.items())` gives)."""
        return dict(self.headers)


class BadRequest(Exception):
    pass


_reasons = {status.value: status.phrase for status in HTTPStatus}
_date = [0, ""]


def _http_date() -> str:
    now = int(time.time())
    if _date[0] != now:
        _date[:] = [now, email.utils.formatdate(now, usegmt=True)]
    return _date[1]


def response_bytes(status: int, headers, body: bytes, head_only: bool = False, server: str = "") -> bytes:
    """The status line, the headers (Content-Length set from the body) and the body."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    lines = [f"HTTP/1.1 {status} {_reasons.get(status, 'Unknown')}"]
    if server:
        lines.append(f"Server: {server}")
        lines.append(f"Date: {_http_date()}")
    items = headers.items() if isinstance(headers, dict) else headers
    length = None
    for name, value in items:
        lowered = name.lower()
        if lowered == "content-length":
            length = str(value)  # a HEAD answer keeps the length of the body it does not send
            continue
        if lowered in ("connection", "transfer-encoding"):
            continue
        lines.append(f"{name}: {value}")
    if length is None or not head_only:
        length = str(len(body))
    lines.append(f"Content-Length: {length}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body


class _Handler(socketserver.StreamRequestHandler):
    rbufsize = MAX_LINE
    disable_nagle_algorithm = True

    def handle(self) -> None:
        app: Callable = self.server.app
        while True:
            try:
                request = self._read()
            except BadRequest as exc:
                self._send(400, {"Content-Type": "text/plain"}, str(exc).encode())
                return
            except (ConnectionError, TimeoutError, OSError):
                return
            if request is None:
                return
            try:
                status, headers, body = app(request)
            except Exception:
                import traceback

                traceback.print_exc()
                status, headers, body = 500, {"Content-Type": "text/plain"}, b"Internal Server Error"
                request.close = True
            try:
                self._send(status, headers, body, head_only=request.method == "HEAD")
            except OSError:
                return
            if request.close:
                return

    def _send(self, status: int, headers, body: bytes, head_only: bool = False) -> None:
        self.wfile.write(response_bytes(status, headers, body, head_only, self.server.server_name_header))

    def _line(self) -> bytes:
        line = self.rfile.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise BadRequest("line too long")
        return line

    def _read(self) -> Request | None:
        line = self._line()
        while line in (b"\r\n", b"\n"):  # stray empty lines between requests are allowed
            line = self._line()
        if not line:
            return None
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise BadRequest("bad request line")
        method, target, version = parts
        headers: list[tuple[str, str]] = []
        while True:
            line = self._line()
            if line in (b"\r\n", b"\n", b""):
                break
            if len(headers) >= MAX_HEADERS:
                raise BadRequest("too many headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise BadRequest("bad header line")
            headers.append((name.strip(), value.strip()))
        lower = {name.lower(): value for name, value in headers}
        request = Request(
            method, target, version, headers, b"", self.client_address, self.server.server_address
        )
        request.lower = lower
        request.close = version != "HTTP/1.1" or lower.get("connection", "").lower() == "close"
        if lower.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if "chunked" in lower.get("transfer-encoding", "").lower():
            request.body = self._chunked()
        else:
            length = lower.get("content-length", "0").strip() or "0"
            if not (length.isascii() and length.isdigit()):
                request.close = True  # the body's end is unknown: the application answers, then we close
                request.body = None
            else:
                request.body = self.rfile.read(int(length)) if int(length) else b""
        return request

    def _chunked(self) -> bytes:
        chunks = []
        while True:
            size_line = self._line().split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise BadRequest("bad chunk size") from None
            if size == 0:
                while self._line() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self._line()


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    """Threads per connection; `app(request)` answers each request."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256  # dozens of clients may connect at once

    def __init__(self, address: tuple[str, int], app: Callable, server_name: str = ""):
        self.app = app
        self.server_name_header = server_name
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        super().server_bind()
