"""The route a run reports to: ``GET|POST <base>/octorpa/v1/callbacks/<token>``.

A FastAPI app on Airflow 3's api-server, a Flask blueprint on Airflow 2's webserver (exempt from
CSRF, which a robot cannot satisfy). It needs no Airflow login: the token is the credential, for one
call's report only. The token is blanked in the server's own record of the request before its
access log reads it. The contract (bodies, answers, limits) is on the "Waiting for a run" page.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint's annotations at definition,
# and Request is imported inside fastapi_app().
import json
import re
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from airflow_octorpa.callbacks.progress import Progress, record_progress
from airflow_octorpa.callbacks.reports import (
    FAILED,
    MAX_MESSAGE_CHARS,
    MAX_REPORT_BYTES,
    NOT_FOUND,
    SUCCEEDED,
    ReportKey,
    ReportShapeError,
    RouteAnswer,
    RunReport,
    check_outputs,
    check_text,
    record_report,
)
from airflow_octorpa.callbacks.token import CALLBACK_PATH, ROUTE_PREFIX, HiddenToken

RUNNING = "running"  # a progress report; its answer says whether to cancel
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}([A-Za-z0-9_-]{32})?$")  # [task instance digest] + secrets.token_urlsafe(32)
_BLANK = "***"


class _Malformed(Exception):
    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.answer = RouteAnswer(status, {"accepted": False, "error": error})


def handle_report(token: str, method: str, query: Mapping[str, list[str]], body: bytes | None) -> RouteAnswer:
    """The answer to one request of a run (``body`` None: over the size limit): its final report,
    a progress report, or a plain ``GET`` that asks whether to cancel."""
    key = ReportKey.from_token(token) if _TOKEN.match(token) else None
    if key is None:
        return NOT_FOUND
    try:
        report = _from_post(body) if method == "POST" else _from_query(query)
    except _Malformed as malformed:
        return malformed.answer
    from airflow.utils.session import create_session

    from airflow_octorpa.run_records import sweep_soon

    with create_session() as session:
        if isinstance(report, RunReport):
            answer = record_report(key, report, session)
        else:
            answer = record_progress(key, report, session)
    sweep_soon()  # the api-server serves every report: records no listener removed go from here too
    return answer


def handle_inbox_report(token: str, method: str, query: Mapping[str, list[str]], body: bytes | None) -> RouteAnswer:
    """The answer to a report sent to an inbox: its end report only, with an optional ``report_id``."""
    from airflow_octorpa.callbacks import inbox

    if not inbox.is_token(token):
        return inbox.NOT_FOUND
    report: RunReport | Progress | None
    try:
        if method == "POST":
            data = _json_object(body)
            report_id = _report_id(data.pop("report_id", None))
            report = _from_data(data)
        else:
            rest = dict(query)
            given = rest.pop("report_id", [None])
            if len(given) != 1:
                raise _Malformed(400, f"The parameter 'report_id' is given {len(given)} times.")
            report_id = _report_id(given[0])
            report = _from_query(rest)
        if not isinstance(report, RunReport):
            raise _Malformed(400, (
                f"An inbox takes a run's end report: status={SUCCEEDED!r} or {FAILED!r}, with outputs and a "
                "message. Progress and cancel questions go to a callback URL, which a DAG task gives its run."))  # fmt: skip
    except _Malformed as malformed:
        return malformed.answer
    from airflow.utils.session import create_session

    with create_session() as session:
        return inbox.accept(session, token, report, report_id)


def _report_id(value: Any) -> str | None:
    from airflow_octorpa.callbacks.inbox import MAX_REPORT_ID_CHARS

    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_REPORT_ID_CHARS:
        raise _Malformed(400, f"report_id must be text of 1 to {MAX_REPORT_ID_CHARS} characters.")
    try:
        check_text(value, "report_id")
    except ReportShapeError as err:
        raise _Malformed(400, f"{err} Nothing was stored.") from None
    return value


def _json_object(body: bytes | None) -> dict[str, Any]:
    if body is None:
        raise _Malformed(413, f"The report is over {MAX_REPORT_BYTES} bytes.")
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Malformed(400, "The report is not UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise _Malformed(400, 'The report must be a JSON object: {"status": "succeeded", "outputs": {...}}.')
    return data


def _from_post(body: bytes | None) -> RunReport | Progress:
    return _from_data(_json_object(body))


def _from_data(data: dict[str, Any]) -> RunReport | Progress:
    if data.get("status") == RUNNING:
        unknown = sorted(set(data) - {"status", "message", "progress"})
        if unknown:
            raise _Malformed(
                400, f"A progress report has unknown fields {unknown[:5]!r}; it takes status, message, progress."
            )
        return _progress(data.get("message", ""), data.get("progress"))
    unknown = sorted(set(data) - {"status", "outputs", "message"})
    if unknown:
        raise _Malformed(400, f"The report has unknown fields {unknown[:5]!r}; it takes status, outputs, message.")
    outputs = data.get("outputs", {})
    if outputs is None:
        outputs = {}
    if not isinstance(outputs, dict):
        raise _Malformed(400, "outputs must be a JSON object of output names and values.")
    return _report(data.get("status"), outputs, data.get("message", ""))


def _from_query(query: Mapping[str, list[str]]) -> RunReport | Progress | None:
    unknown = sorted(set(query) - {"status", "message", "progress"})
    if unknown:
        raise _Malformed(400, f"The report has unknown parameters {unknown[:5]!r}; it takes status, message, progress.")
    for name, values in query.items():
        if len(values) != 1:
            raise _Malformed(400, f"The parameter {name!r} is given {len(values)} times.")
    if not query:
        return None  # the app asks whether to cancel
    status = query.get("status", [None])[0]
    if status == RUNNING:
        return _progress(query.get("message", [""])[0], query.get("progress", [None])[0])
    if "progress" in query:
        raise _Malformed(400, f"progress goes with status={RUNNING!r} only.")
    return _report(status, {}, query.get("message", [""])[0])


def _message(message: Any) -> str:
    if message is None:
        return ""
    if not isinstance(message, str) or len(message) > MAX_MESSAGE_CHARS:
        raise _Malformed(400, f"message must be text of at most {MAX_MESSAGE_CHARS} characters.")
    try:
        check_text(message, "message")
    except ReportShapeError as err:
        raise _Malformed(400, f"{err} Nothing was stored.") from None
    return message


def _progress(message: Any, progress: Any) -> Progress:
    if isinstance(progress, str):
        try:
            progress = float(progress)
        except ValueError:
            raise _Malformed(400, f"progress must be a number from 0 to 1, not {progress!r:.40}.") from None
    if progress is not None and (
        isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0 <= progress <= 1
    ):
        raise _Malformed(400, f"progress must be a number from 0 to 1, not {progress!r:.40}.")
    return Progress(_message(message), None if progress is None else float(progress), time.time())


def _report(status: Any, outputs: dict[str, Any], message: Any) -> RunReport:
    if status not in (SUCCEEDED, FAILED):
        raise _Malformed(400, f"status must be {SUCCEEDED!r}, {FAILED!r} or {RUNNING!r}, not {status!r:.40}.")
    message = _message(message)
    try:
        check_outputs(outputs)
    except ReportShapeError as err:
        raise _Malformed(400, f"{err} Nothing was stored; see the report's limits in the provider's docs.") from None
    return RunReport(status, outputs, message)


def fastapi_app() -> Any:
    """The route for Airflow 3's api-server (``AirflowPlugin.fastapi_apps``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from airflow_octorpa.callbacks.inbox import INBOX_PATH

    app = FastAPI(title="Octopus RPA run reports", docs_url=None, redoc_url=None, openapi_url=None)

    async def serve(request: Request, handler: Any) -> JSONResponse:  # the token is never a plain local
        token = HiddenToken(request.path_params["token"])
        _blank_in_scope(request.scope, token)
        body: bytes | None = b""
        if request.method == "POST":
            body = await _capped_body(request)
        query: dict[str, list[str]] = {}
        for name, value in request.query_params.multi_items():
            query.setdefault(name, []).append(value)
        answer = await run_in_threadpool(handler, token, request.method, query, body)
        return JSONResponse(answer.body, status_code=answer.status)

    @app.api_route(CALLBACK_PATH + "{token}", methods=["GET", "POST"])
    async def callback(request: Request) -> JSONResponse:
        return await serve(request, handle_report)

    @app.api_route(INBOX_PATH + "{token}", methods=["GET", "POST"])
    async def inbox(request: Request) -> JSONResponse:
        return await serve(request, handle_inbox_report)

    return app


def _blank_in_scope(scope: MutableMapping[str, Any], token: str) -> None:
    """Uvicorn's and Airflow 3.3's access logs read the path from this same scope afterwards."""
    scope["path"] = scope["path"].replace(token, _BLANK)
    if isinstance(scope.get("raw_path"), bytes):
        scope["raw_path"] = scope["raw_path"].replace(token.encode(), _BLANK.encode())
    scope.get("path_params", {}).pop("token", None)


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

    from airflow_octorpa.callbacks.inbox import INBOX_PATH

    blueprint = Blueprint("octorpa_callbacks", __name__, url_prefix=ROUTE_PREFIX)

    @blueprint.route(CALLBACK_PATH + "<token>", methods=["GET", "POST"])
    def callback(token: str) -> Any:
        return serve(token, handle_report)

    @blueprint.route(INBOX_PATH + "<token>", methods=["GET", "POST"])
    def inbox(token: str) -> Any:
        return serve(token, handle_inbox_report)

    def serve(token: str, handler: Any) -> Any:
        token = HiddenToken(token)
        (request.view_args or {}).pop("token", None)
        for name in ("PATH_INFO", "RAW_URI", "REQUEST_URI"):  # what gunicorn's access log reads afterwards
            if isinstance(request.environ.get(name), str):
                request.environ[name] = request.environ[name].replace(token, _BLANK)
        body: bytes | None = b""
        if request.method == "POST":
            length = request.content_length
            body = (
                None if length is not None and length > MAX_REPORT_BYTES else request.stream.read(MAX_REPORT_BYTES + 1)
            )
            if body is not None and len(body) > MAX_REPORT_BYTES:
                body = None
        query = {name: request.args.getlist(name) for name in request.args}
        answer = handler(token, request.method, query, body)
        response = jsonify(answer.body)
        response.status_code = answer.status
        return response

    blueprint.record_once(_exempt_from_csrf)
    return blueprint


def _exempt_from_csrf(state: Any) -> None:
    """A robot cannot send Airflow's CSRF token. Only the webserver's app, which registers the
    blueprint, has Flask-WTF's CSRF protection (in ``app.extensions``): nothing else imports it."""
    csrf = state.app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(state.blueprint)
