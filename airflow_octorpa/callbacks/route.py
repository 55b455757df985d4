"""The route a run reports to: ``GET|POST <base>/octorpa/v1/callbacks/<token>``.

Served by Airflow 3's api-server as a plugin FastAPI app, and by Airflow 2's webserver as a Flask
blueprint (exempt from CSRF, which a robot cannot satisfy). It needs no Airflow login: the token is
the credential, good for one call's report only, and no other Airflow route becomes reachable.

- ``POST`` with ``Content-Type: application/json`` and ``{"status": "succeeded" | "failed",
  "outputs": {...}, "message": "..."}`` (``outputs`` and ``message`` optional; at most 64 KiB);
- ``GET ...?status=succeeded`` (or ``failed``, with an optional ``message`` of at most 1,000
  characters), for an app that can only open a web page.

Answers: 200 ``{"accepted": true}`` for the first report and an identical repeat; 409 for a
contradiction; 404 for a token that names no call; 400 for a malformed report; 413 for a body
over 64 KiB. Never a 5xx for bad input; the answer is sent after the report is committed.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint's annotations at definition,
# and Request is imported inside fastapi_app().
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_octorpa.callbacks.reports import (
    FAILED,
    MAX_MESSAGE_CHARS,
    MAX_REPORT_BYTES,
    SUCCEEDED,
    Outcome,
    RunReport,
    record_report,
)
from airflow_octorpa.callbacks.token import CALLBACK_PATH, ROUTE_PREFIX, token_key

_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")  # secrets.token_urlsafe(32)
_NOT_FOUND = Outcome(404, {"accepted": False, "error": "No call awaits a report with this token."})


class _Malformed(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.outcome = Outcome(status, {"accepted": False, "error": error})


def handle_report(token: str, method: str, query: Mapping[str, list[str]], body: bytes | None) -> Outcome:
    """The answer to one report (``body`` None: over the size limit)."""
    if not _TOKEN.match(token):
        return _NOT_FOUND
    try:
        report = _from_post(body) if method == "POST" else _from_query(query)
    except _Malformed as malformed:
        return malformed.outcome
    from airflow.utils.session import create_session

    with create_session() as session:
        return record_report(token_key(token), report, session)


def _from_post(body: bytes | None) -> RunReport:
    if body is None:
        raise _Malformed(413, f"The report is over {MAX_REPORT_BYTES} bytes.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Malformed(400, "The report is not UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise _Malformed(400, 'The report must be a JSON object: {"status": "succeeded", "outputs": {...}}.')
    unknown = sorted(set(data) - {"status", "outputs", "message"})
    if unknown:
        raise _Malformed(400, f"The report has unknown fields {unknown[:5]!r}; it takes status, outputs, message.")
    outputs = data.get("outputs", {})
    if outputs is None:
        outputs = {}
    if not isinstance(outputs, dict):
        raise _Malformed(400, "outputs must be a JSON object of output names and values.")
    return _report(data.get("status"), outputs, data.get("message", ""))


def _from_query(query: Mapping[str, list[str]]) -> RunReport:
    unknown = sorted(set(query) - {"status", "message"})
    if unknown:
        raise _Malformed(400, f"The report has unknown parameters {unknown[:5]!r}; it takes status and message.")
    for name, values in query.items():
        if len(values) != 1:
            raise _Malformed(400, f"The parameter {name!r} is given {len(values)} times.")
    return _report(query.get("status", [None])[0], {}, query.get("message", [""])[0])


def _report(status: Any, outputs: dict[str, Any], message: Any) -> RunReport:
    if status not in (SUCCEEDED, FAILED):
        raise _Malformed(400, f"status must be {SUCCEEDED!r} or {FAILED!r}, not {status!r:.40}.")
    if message is None:
        message = ""
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise _Malformed(400, f"message must be text of at most {MAX_MESSAGE_CHARS} characters.")
    try:
        json.dumps(outputs, allow_nan=False)
    except ValueError:
        raise _Malformed(400, "outputs hold a value JSON cannot carry (NaN or Infinity).") from None
    return RunReport(status, outputs, message)


def fastapi_app() -> Any:
    """The route for Airflow 3's api-server (``AirflowPlugin.fastapi_apps``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="Octopus RPA run reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.api_route(CALLBACK_PATH + "{token}", methods=["GET", "POST"])
    async def callback(token: str, request: Request) -> JSONResponse:
        body: bytes | None = b""
        if request.method == "POST":
            body = await _capped_body(request)
        query: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            query.setdefault(name, []).append(value)
        outcome = await run_in_threadpool(handle_report, token, request.method, query, body)
        return JSONResponse(outcome.body, status_code=outcome.status)

    return app


async def _capped_body(request: Any) -> bytes | None:
    """The body, or None once it passes the limit (the rest is not read)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_REPORT_BYTES:
        return None
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > MAX_REPORT_BYTES:
            return None
    return bytes(received)


def flask_blueprint() -> Any:
    """The route for Airflow 2's webserver (``AirflowPlugin.flask_blueprints``), exempt from CSRF."""
    from flask import Blueprint, jsonify, request

    blueprint = Blueprint("octorpa_callbacks", __name__, url_prefix=ROUTE_PREFIX)

    @blueprint.route(CALLBACK_PATH + "<token>", methods=["GET", "POST"])
    def callback(token: str) -> Any:
        body: bytes | None = b""
        if request.method == "POST":
            length = request.content_length
            body = (
                None if length is not None and length > MAX_REPORT_BYTES else request.stream.read(MAX_REPORT_BYTES + 1)
            )
            if body is not None and len(body) > MAX_REPORT_BYTES:
                body = None
        query = {name: request.args.getlist(name) for name in request.args}
        outcome = handle_report(token, request.method, query, body)
        response = jsonify(outcome.body)
        response.status_code = outcome.status
        return response

    try:  # a robot cannot send Airflow's CSRF token
        from airflow.www.app import csrf

        csrf.exempt(blueprint)
    except Exception:  # noqa: BLE001 - no CSRF protection to exempt from here
        pass
    return blueprint
