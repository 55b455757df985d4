"""The run's page, ``GET <base>/octorpa/v1/run?dag_id=&run_id=&task_id=&map_index=``, behind
Airflow's own login and DAG permissions (reading the DAG's task instances), on every version:

- Airflow 3's api-server: a route of the provider's FastAPI app. The user comes from the JWT the
  api-server's auth manager issued (the ``Authorization`` header, else the ``_token`` cookie) and is
  asked the auth manager's ``is_authorized_dag``. Airflow 3.0's UI keeps its token in the browser's
  local storage instead of the cookie: a request without one answers 401 with a page that retries
  with that token, or else sends the browser to Airflow's login.
- Airflow 2.11's webserver: a route of the provider's Flask blueprint with Airflow's own
  ``has_access_dag`` (Flask-AppBuilder's login), which sends an anonymous user to the login page
  and a user without the DAG's permission away, as Airflow's own pages do.

The callback token grants nothing here. What the page shows is in
:mod:`airflow_octorpa.callbacks.run_page`; this module renders it.
"""

# No "from __future__ import annotations": FastAPI reads the endpoint's annotations at definition.
import html
import json
import time
from typing import Any

from airflow_octorpa.callbacks.reports import EXPIRED, FAILED, SUCCEEDED, WAITING
from airflow_octorpa.callbacks.run_page import LINK_NAME, RUN_PAGE_PATH, RunFacts

_STYLE = """
body{font-family:system-ui,"Noto Sans CJK SC","WenQuanYi Zen Hei",sans-serif;margin:2rem;color:#1f2937;max-width:60rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #e5e7eb}
table{border-collapse:collapse}td,th{padding:.2rem .8rem .2rem 0;text-align:left;vertical-align:top}
th{color:#6b7280;font-weight:500}pre{background:#f3f4f6;padding:.6rem;overflow:auto}
.state{font-weight:600}.muted{color:#6b7280}.bar{background:#e5e7eb;width:12rem;height:.6rem;display:inline-block}
.bar span{background:#f59e0b;height:.6rem;display:block}
"""


def _when(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)) or seconds <= 0:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _rows(pairs: list[tuple[str, Any]]) -> str:
    cells = "".join(f"<tr><th>{html.escape(name)}</th><td>{value}</td></tr>" for name, value in pairs)
    return f"<table>{cells}</table>"


def _text(value: Any) -> str:
    return "—" if value in (None, "") else html.escape(str(value))


def render(facts: RunFacts, task_page: str) -> str:
    """The page's HTML; every value is escaped (the app's message and outputs are anyone's text)."""
    result = facts.result or {}
    flow = result.get("flow_process_no")
    title = f"Octopus RPA run flowProcessNo={flow}" if flow else "Octopus RPA run"
    task, index = facts.trigger
    trigger = html.escape(task + (f" [{index}]" if index >= 0 else ""))
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="muted">DAG {html.escape(facts.dag_id)}, run {html.escape(facts.run_id)}, trigger task '
        f'{trigger}. <a href="{html.escape(task_page)}">Back to the task</a></p>',
    ]
    if not facts.found:
        parts.append(
            "<p>No Octopus RPA call is recorded for this task instance: it has not run yet, it made no call, "
            "or its records were removed (its DAG run ended before it kept a copy). The task's log says what "
            "it did.</p>"
        )
    parts += _call_section(facts) + _progress_section(facts) + _cancel_section(facts) + _report_section(facts)
    if facts.sources:
        parts.append(f'<p class="muted">From: {html.escape(", ".join(facts.sources))}.</p>')
    body = "\n".join(parts)
    return f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>' \
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"  # fmt: skip


def _call_section(facts: RunFacts) -> list[str]:
    call, result = facts.call or {}, facts.result or {}
    if not call and not result:
        return []
    slot = call.get("slot") or {}
    held = (
        f"pool {html.escape(str(slot.get('pool')))}, {float(slot.get('seconds') or 0):g} s after the call, in the "
        + ("triggerer (deferred)" if slot.get("where") == "triggerer" else "worker")
        if slot
        else "—"
    )
    rows = [
        ("flowProcessNo", _text(result.get("flow_process_no"))),
        ("flowId", _text(result.get("flow_id"))),
        ("enterpriseId", _text(result.get("enterprise_id"))),
        ("Call", f'<span class="state">{_text(call.get("state") or ("started" if result else None))}</span>'),
        ("Webhook", _text(call.get("webhook"))),
        ("Robot", _text(call.get("robot") or ("chosen on the trigger" if call else None))),
        ("Sent at", _when(call.get("sent_at"))),
        ("Answered at", _when(call.get("answered_at"))),
        ("Slot held", held),
    ]
    parts = ["<h2>Call</h2>", _rows(rows)]
    if refusals := call.get("refusals") or []:
        lines = "".join(
            f"<tr><td>{_when(item.get('at'))}</td><td>{_text(item.get('status') or item.get('error'))}</td>"
            f"<td>{_text(item.get('code'))}</td><td>{_text(item.get('request_id'))}</td></tr>"
            for item in refusals
        )
        parts.append(  # a call never sent has no HTTP status: its error's name stands there
            "<h2>Refused attempts</h2><table><tr><th>At</th><th>HTTP status</th><th>Code</th><th>Request id</th></tr>"
            f"{lines}</table>"
        )
    return parts


def _progress_section(facts: RunFacts) -> list[str]:
    report = facts.report or {}
    history = report.get("history") or []
    if not history:
        return ["<h2>Progress</h2><p>No progress reported.</p>"] if report else []
    lines = []
    for entry in reversed(history):
        share = entry.get("progress")
        bar = (
            f'<span class="bar"><span style="width:{max(0.0, min(1.0, float(share))) * 100:.0f}%"></span></span> '
            f"{float(share):.0%}"
            if isinstance(share, (int, float))
            else "—"
        )
        lines.append(
            f"<tr><td>#{_text(entry.get('seq'))}</td><td>{_when(entry.get('at'))}</td><td>{bar}</td>"
            f"<td>{_text(entry.get('message'))}</td></tr>"
        )
    return [
        "<h2>Progress</h2><table><tr><th></th><th>At</th><th>Progress</th><th>Message</th></tr>",
        "".join(lines) + "</table>",
    ]


def _cancel_section(facts: RunFacts) -> list[str]:
    report, cancel = facts.report or {}, facts.cancel or {}
    if not report:
        return []
    expired = report.get("status") == EXPIRED
    if not cancel and not expired:
        if report.get("status") in (SUCCEEDED, FAILED):
            return ["<h2>Cancel</h2><p>Not requested: the run reported its end.</p>"]
        return ["<h2>Cancel</h2><p>Not requested: Airflow still awaits this run.</p>"]
    heard = report.get("cancel_heard_at")
    rows = [
        ("Requested at", _when(cancel.get("requested_at") or report.get("expired_at"))),
        ("Why", _text(cancel.get("reason") or "the wait timed out")),
        ("Heard by the app", _when(heard) if heard else "not yet: the app has made no request since"),
    ]
    return ["<h2>Cancel</h2>", _rows(rows)]


def _report_section(facts: RunFacts) -> list[str]:
    report = facts.report or {}
    if not report:
        return []
    status = report.get("status")
    if status in (WAITING, None):
        return ["<h2>Report</h2><p>Not reported yet.</p>"]
    rows = [
        ("Status", f'<span class="state">{_text(status)}</span>'),
        ("Message", _text(report.get("message"))),
        ("Reported at", _when(report.get("reported_at"))),
    ]
    if after := report.get("after_end"):
        rows.append(("After the wait ended", f"{_text(after.get('status'))} at {_when(after.get('reported_at'))}: "
                     f"{_text(after.get('message'))}"))  # fmt: skip
    parts = ["<h2>Report</h2>", _rows(rows)]
    if outputs := report.get("outputs"):
        parts.append(f"<h3>Outputs</h3><pre>{html.escape(json.dumps(outputs, ensure_ascii=False, indent=2))}</pre>")
    return parts


def page_for(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """Gather the facts (in a session of its own) and render them."""
    from airflow.utils.session import create_session

    from airflow_octorpa.callbacks.run_page import gather
    from airflow_octorpa.version_compat import task_page_path

    with create_session() as session:
        facts = gather(session, dag_id, run_id, task_id, map_index)
    return render(facts, task_page_path(dag_id, run_id, task_id, map_index))


# -- Airflow 3: a route of the provider's FastAPI app -------------------------------------------

_LOGIN_SHELL = """<!doctype html><html><head><meta charset="utf-8"><title>{name}</title></head><body>
<p>Sign in to Airflow to see this page. <a id="login" href="{login}">Sign in</a></p>
<script>
const login = document.getElementById("login").href;
const token = localStorage.getItem("token");  // where Airflow 3.0's UI keeps its login
if (!token) {{ location.replace(login); }} else {{
  fetch(location.href, {{headers: {{Authorization: "Bearer " + token}}}}).then((answer) => {{
    if (answer.status === 401) {{ location.replace(login); return; }}
    return answer.text().then((page) => {{ document.open(); document.write(page); document.close(); }});
  }});
}}
</script></body></html>"""


def add_fastapi_route(app: Any) -> None:
    """The page on Airflow 3's api-server."""
    from fastapi import Request
    from fastapi.responses import HTMLResponse
    from starlette.concurrency import run_in_threadpool

    @app.get(RUN_PAGE_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def run_page(request: Request, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> HTMLResponse:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        from airflow_octorpa.version_compat import dag_details

        manager = get_auth_manager()
        user = await _user(request, manager)
        if user is None:
            login = _login_url(manager, str(request.url))
            return HTMLResponse(_LOGIN_SHELL.format(name=LINK_NAME, login=html.escape(login)), status_code=401)
        details = await run_in_threadpool(dag_details, dag_id)
        allowed = manager.is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=details, user=user
        )
        if not allowed:
            return HTMLResponse(
                f"<!doctype html><p>Forbidden: you may not read the task instances of DAG {html.escape(dag_id)}.</p>",
                status_code=403,
            )
        return HTMLResponse(await run_in_threadpool(page_for, dag_id, run_id, task_id, map_index))


async def _user(request: Any, manager: Any) -> Any:
    """The user of the api-server's JWT (header, else cookie), or None for no valid login."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    token = credentials if scheme.lower() == "bearer" and credentials else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        return None
    try:
        return await manager.get_user_from_token(token)
    except Exception:  # noqa: BLE001 - expired, forged, or signed with another key: no login
        return None


def _login_url(manager: Any, back_to: str) -> str:
    from urllib.parse import urlencode

    login = manager.get_url_login(next=back_to)
    return login if "next=" in login else f"{login}{'&' if '?' in login else '?'}{urlencode({'next': back_to})}"


# -- Airflow 2.11: a route of the provider's Flask blueprint, behind Airflow's has_access_dag --------


def add_flask_route(blueprint: Any) -> None:
    """The page on Airflow 2's webserver. Airflow's own ``has_access_dag`` (Flask-AppBuilder's login
    and the DAG's permissions) is applied per request: the scheduler, the triggerer and every task
    process load the plugin, and only the webserver may pay for importing Flask-AppBuilder."""
    from flask import request

    def page() -> Any:
        args = request.args
        map_index = args.get("map_index", "-1")
        if not all(args.get(name) for name in ("dag_id", "run_id", "task_id")) or not map_index.lstrip("-").isdigit():
            return "The page needs dag_id, run_id, task_id and map_index.", 400
        return page_for(args["dag_id"], args["run_id"], args["task_id"], int(map_index))

    @blueprint.route(RUN_PAGE_PATH, methods=["GET"])
    def run_page() -> Any:
        from airflow.auth.managers.models.resource_details import DagAccessEntity
        from airflow.www.auth import has_access_dag

        return has_access_dag("GET", DagAccessEntity.TASK_INSTANCE)(page)()
