"""The emulator's HTTP server: the vendor's invoke route and the control API, on one port."""

from __future__ import annotations

import json
import logging
import re
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from airflow_octorpa.emulator.account import EmulatorState, expected_sign
from airflow_octorpa.emulator.config import EmulatorConfig, default_config
from airflow_octorpa.emulator.control import (
    BadRequest,
    faults_from,
    json_body,
    random_faults_from,
    schedule_from,
    settings_from,
    webhook_update,
)

log = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/api/v1/bots/webhooks/(?P<id>[^/]+)/invoke/?$")
CONTROL_PREFIX = "/_emulator"
# The largest request body the emulator reads (the provider refuses bodies over 1 MiB).
MAX_REQUEST_BYTES = 2 * 1024 * 1024

__all__ = ["EmulatorState", "OctoRpaEmulator", "binding_warning", "expected_sign"]


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits for the
    # delayed ACK (40 ms) on every call.
    disable_nagle_algorithm = True
    # A client that opens a request and stops sending is dropped after this many seconds, instead
    # of keeping a thread forever.
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, str):  # an HTML page
            data, content_type = payload.encode("utf-8"), "text/html; charset=utf-8"
        else:
            data, content_type = (
                json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                "application/json; charset=utf-8",
            )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        """The request's body; a Content-Length that is no count or too large is a bad request."""
        text = (self.headers.get("Content-Length") or "0").strip()
        if not (text.isascii() and text.isdigit()):
            raise BadRequest(400, f"Content-Length {text[:40]!r} is not a byte count.")
        if int(text) > MAX_REQUEST_BYTES:
            raise BadRequest(413, f"The body is over {MAX_REQUEST_BYTES} bytes.")
        length = int(text)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            if match := INVOKE_PATH.match(path):
                self._invoke(self.server.state, match["id"])
            elif path.startswith(CONTROL_PREFIX + "/"):
                self._send(200, self._control(path))
            else:
                self._send(404, {"code": "NotFound", "description": f"No route for POST {path[:200]}."})
        except BadRequest as bad:
            self.close_connection = True  # the rest of a refused body is not read
            self._send(bad.status, {"code": "BadRequest", "description": bad.description})

    def _control(self, path: str) -> Any:
        """The emulator's own routes: every bad value is a 400 naming it; nothing changes then."""
        state = self.server.state
        name, _, arg = path[len(CONTROL_PREFIX) + 1 :].partition("/")
        if name == "reset" and not arg:
            self._read_body()
            state.reset()
            return {"reset": True}
        body = json_body(self._read_body())
        if name == "settings" and not arg:
            state.configure(**settings_from(body))
            return state.public_config()
        if name == "faults" and arg:
            faults = faults_from(body)
            state.faults.queue(arg, faults)
            return {"queued": sum(int(f.get("count", 1)) for f in faults)}
        if name == "random-faults" and not arg:
            state.faults.set_random(random_faults_from(body))
            return {"random_faults": body}
        if name == "webhooks" and arg:
            state.put_webhook(webhook_update(state, arg, body))
            return {"webhook": arg}
        if name == "schedules" and arg:
            url, params, count, every = schedule_from(body)
            try:
                state.run_on_schedule(arg, url, params, count, every)
            except LookupError as err:
                raise BadRequest(404, str(err)) from None
            return {"scheduled": count, "webhook": arg}
        raise BadRequest(404, f"No route for POST {path[:200]}.")

    def _invoke(self, state: EmulatorState, webhook_id: str) -> None:
        fault = state.faults.take(webhook_id)
        if fault is not None and fault.kind == "drop_before_read":
            state.record_dropped(webhook_id)
            self._reset_connection()
            return
        try:
            body = self._read_body()
        except BadRequest:
            state.faults.put_back(webhook_id, fault)
            raise
        answer = state.invoke(webhook_id, body, fault)
        if answer.delay:
            time.sleep(answer.delay)
        if answer.reset:
            self._reset_connection()
            return
        try:
            self._send(answer.status, answer.payload, answer.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a delayed answer): the run started all the same

    def _reset_connection(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a reset, not a clean end of answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?", 1)[0]
        routes = {
            f"{CONTROL_PREFIX}/health": lambda: {"status": "ok"},
            f"{CONTROL_PREFIX}/calls": lambda: state.snapshot("calls"),
            f"{CONTROL_PREFIX}/runs": lambda: state.snapshot("runs"),
            f"{CONTROL_PREFIX}/config": state.public_config,
        }
        if path in routes:
            self._send(200, routes[path]())
        elif INVOKE_PATH.match(path):
            # A webhook only takes POST; answering lets a connection test reach it safely.
            self._send(405, {"code": "MethodNotAllowed", "description": "Use POST."}, {"Allow": "POST"})
        else:
            self._send(404, {"code": "NotFound", "description": f"No route for GET {path}."})

    do_HEAD = do_GET


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.state = state


def binding_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address: the emulator has no authentication."""
    from airflow_octorpa.checks import is_loopback_host

    if is_loopback_host(host):
        return None
    return (
        f"The emulator binds {host!r}, not a loopback address: anyone who reaches it can read its calls and "
        "change its webhooks and faults (it has no authentication). Bind 127.0.0.1 unless you mean it."
    )


class OctoRpaEmulator:
    """Run the emulator in a background thread; ``with OctoRpaEmulator() as emu: emu.webhook_url(...)``."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        if warning := binding_warning(host):
            log.warning(warning)
        self.state = EmulatorState(config or default_config())
        self._server = EmulatorHTTPServer((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        host = host if isinstance(host, str) else host.decode()
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def webhook_url(self, webhook_id: str) -> str:
        return f"{self.url}/api/v1/bots/webhooks/{webhook_id}/invoke"

    def start(self) -> OctoRpaEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="octorpa-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OctoRpaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["EmulatorState", "OctoRpaEmulator", "expected_sign"]
