"""The provider's report route, served by a real HTTP server on a free loopback port in the test
process: the plugin's FastAPI app under uvicorn on Airflow 3, its Flask blueprint under werkzeug on
Airflow 2 (what the api-server and the webserver mount; the real components are tested in
test_scheduler)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.airflow_cluster import free_port
from tests.support.airflow_helpers import AIRFLOW_V_3

_NESTED = b'{"status": "succeeded", "outputs": {"a": ' + b"[" * 600 + b"]" * 600 + b"}}"
# Reports a Variable, a trigger, an XCom or PostgreSQL's JSONB could not carry: the route answers
# each with 400 (requests' keyword arguments; "method" defaults to POST).
BAD_REPORTS: dict[str, dict] = {
    "nested 600 deep": {"data": _NESTED, "headers": {"Content-Type": "application/json"}},
    "U+0000 in a key": {"json": {"status": "succeeded", "outputs": {"a\u0000b": 1}}},
    "U+0000 in a value": {"json": {"status": "succeeded", "outputs": {"a": "x\u0000y"}}},
    "U+0000 in the message (GET)": {"method": "GET", "params": {"status": "failed", "message": "a\u0000b"}},
    "many keys": {"json": {"status": "succeeded", "outputs": {f"k{i}": i for i in range(2500)}}},
    "a very long key": {"json": {"status": "succeeded", "outputs": {"k" * 5000: 1}}},
}


def send_bad_reports(url: str) -> dict[str, int]:
    """Each of :data:`BAD_REPORTS` sent to ``url``: its HTTP status, by name."""
    import requests

    answers = {}
    for what, kwargs in BAD_REPORTS.items():
        kwargs = dict(kwargs)
        answers[what] = requests.request(kwargs.pop("method", "POST"), url, timeout=30, **kwargs).status_code
    return answers


@contextmanager
def report_route() -> Iterator[str]:
    """Serve the route; yield the base URL robots would be given (``[octorpa] callback_base_url``)."""
    port = free_port()
    if AIRFLOW_V_3:
        import uvicorn
        from fastapi import FastAPI

        from airflow_octorpa.callbacks.token import ROUTE_PREFIX
        from airflow_octorpa.plugins.report_route import fastapi_app

        root = FastAPI()
        root.mount(ROUTE_PREFIX, fastapi_app())  # as the api-server mounts plugin apps
        server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(10)
        return
    from flask import Flask
    from werkzeug.serving import make_server

    from airflow_octorpa.plugins.report_route import flask_blueprint

    app = Flask("octorpa-test-webserver")
    app.register_blueprint(flask_blueprint())
    werkzeug_server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=werkzeug_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        werkzeug_server.shutdown()
        thread.join(10)
