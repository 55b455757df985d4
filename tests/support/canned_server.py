"""A purpose-built local HTTP server for answers the emulator never gives (gateway pages, stalls)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class CannedAnswer:
    status: int = 200
    body: bytes = b"{}"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drip: float = 0.0  # seconds between the body's bytes: each read is quick, the whole answer slow
    raw: bytes | None = None  # written as is instead of a well-formed answer (broken framing)
    requests: list[tuple[str, bytes]] = field(default_factory=list)
    request_headers: list[dict[str, str]] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)  # time.time() when each request was read
    answered_at: list[float] = field(default_factory=list)  # time.time() when each answer was written


@contextmanager
def canned_server(answer: CannedAnswer, path: str = "/api/v1/bots/webhooks/canned/invoke") -> Iterator[str]:
    """Serve ``answer`` to every request on a free loopback port; yield the URL of ``path`` there."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            answer.requests.append((self.command, self.rfile.read(length) if length else b""))
            answer.request_headers.append(dict(self.headers.items()))
            answer.received_at.append(time.time())
            time.sleep(answer.delay)
            if answer.raw is not None:
                self.wfile.write(answer.raw)
                self.close_connection = True
                return
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                try:
                    for index, chunk in enumerate(_chunks(answer.body, 1 if answer.drip else len(answer.body))):
                        time.sleep(answer.drip if index else 0.0)
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    answer.answered_at.append(time.time())
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: the point of a stalled answer

        do_POST = do_GET = do_HEAD = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{path}"
    finally:
        server.shutdown()
        server.server_close()


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), max(size, 1)):
        yield data[start : start + size]
