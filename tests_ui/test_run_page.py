"""``make test-ui``: the "Octopus RPA run" link, clicked in Airflow's own UI in headless Chromium,
opens the run's page behind Airflow's login, on Airflow 2.11, 3.0 and 3.3.

Each server runs one DAG through ``airflow dags test``: the trigger task starts the emulator's
order app with a callback to that server, the app reports progress and then its end, and the wait
ends with the app's outputs. The DAG run has ended, so the page reads the tasks' copies. The browser
opens the page first without a login (it is sent to Airflow's login), then logs in, opens the task
in Airflow's UI, clicks the link and keeps a screenshot of the page in ``docs/pages/images/``.
"""

from __future__ import annotations

import textwrap
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from airflow_octorpa.emulator import OctoRpaEmulator, WebhookSpec
from tests.support.cli_output import json_output
from tests_ui.airflow_ui import AirflowUi
from tests_ui.test_connection_forms import DOCS, SECRET

DAG_ID = "octorpa_run_page"
APP = "order-app"
DAG_FILE = f'''
from datetime import datetime

from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.sensors.octorpa import OctoRpaRunSensor

try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    start = OctoRpaTriggerOperator(task_id="process_order", app_params={{"订单号": "A-1001"}}, callback=True)
    OctoRpaRunSensor(task_id="process_order_wait", started_run=start.output, timeout=120, poll_interval=1)
'''


def _run_the_dag(airflow: AirflowUi, emulator: OctoRpaEmulator) -> dict[str, Any]:
    """One run of the DAG through ``airflow dags test``; the emulator's run."""
    emulator.state.reset()
    emulator.state.put_webhook(
        WebhookSpec.reporting_app(
            APP, SECRET, name="订单处理", after=3, ask_every=1, outputs={"运单号": "SF1000000001"}, message="已发货"
        )
    )
    dags = airflow.home / "dags"
    dags.mkdir(exist_ok=True)
    (dags / f"{DAG_ID}.py").write_text(textwrap.dedent(DAG_FILE))
    airflow.env.update(
        {
            "AIRFLOW_CONN_OCTORPA_DEFAULT": f'{{"conn_type": "octorpa", "host": "{emulator.webhook_url(APP)}", '
            f'"password": "{SECRET}"}}',
            "AIRFLOW__OCTORPA__CALLBACK_BASE_URL": airflow.url,  # the robot reports to this server
        }
    )
    airflow.cli("pools", "set", "octorpa", "5", "Octopus RPA account (5 per second, 20 per minute)")
    airflow.cli("dags", "reserialize")
    airflow.cli("dags", "test", DAG_ID)
    (run,) = emulator.state.snapshot("runs")
    assert [report["status"] for report in run["callback"]["reports"]] == ["succeeded"], run
    return run


def _run_id(airflow: AirflowUi) -> str:
    (only,) = json_output(
        airflow.cli("dags", "list-runs", *(["-d"] if airflow.major == 2 else []), DAG_ID, "-o", "json")
    )
    return only["run_id"]


def _click_the_link_to_the_run_page(page: Any, run: dict[str, Any], version: str) -> None:
    """Click the wait's "Octopus RPA run" link on its task page; the page it opens shows the run."""
    link = page.get_by_role("link", name="Octopus RPA run")
    link.wait_for(timeout=60_000)
    with page.context.expect_page() if link.get_attribute("target") == "_blank" else _same_page(page) as opened:
        link.click()
    run_page = opened.value
    run_page.wait_for_load_state()
    assert "task_id=process_order_wait" in run_page.url
    _page_shows_the_run(run_page, run)
    _screenshot(run_page, version)


def _page_shows_the_run(page: Any, run: dict[str, Any]) -> None:
    text = page.locator("body").inner_text()
    for shown in (f"flowProcessNo={run['flow_process_no']}", "Progress", "第 ", "succeeded", "已发货", "SF1000000001"):
        assert shown in text, (shown, text)


def _screenshot(page: Any, version: str) -> None:
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / f"run-page-airflow-{'.'.join(version.split('.')[:2])}.png"), full_page=True)


@pytest.mark.timeout(900)
def test_airflow_2_11_link_opens_the_run_page_behind_the_login(browser, emulator):
    with AirflowUi("2.11.2") as airflow:
        run, run_id = _run_the_dag(airflow, emulator), _run_id(airflow)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
        page.goto(
            f"{airflow.url}/octorpa/v1/run?{urlencode({'dag_id': DAG_ID, 'run_id': run_id, 'task_id': 'process_order'})}"
        )
        assert "/login/" in page.url and run["flow_process_no"] not in page.content()  # Airflow's own login
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "admin")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_load_state()
        query = urlencode({"dag_run_id": run_id, "task_id": "process_order_wait", "tab": "details"})
        page.goto(f"{airflow.url}/dags/{DAG_ID}/grid?{query}")
        _click_the_link_to_the_run_page(page, run, airflow.version)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", ["3.0.6", "3.3.2"])
def test_airflow_3_link_opens_the_run_page_behind_the_login(browser, emulator, version):
    """3.3's UI keeps its login in a cookie the page reads; 3.0's in the browser's storage, from
    which the page's first answer (401) retries."""
    with AirflowUi(version, all_admins=False) as airflow:
        run, run_id = _run_the_dag(airflow, emulator), _run_id(airflow)
        page = browser.new_page(viewport={"width": 1280, "height": 1000}, locale="en-US")
        query = urlencode({"dag_id": DAG_ID, "run_id": run_id, "task_id": "process_order"})
        anonymous = page.goto(f"{airflow.url}/octorpa/v1/run?{query}")
        assert anonymous is not None and anonymous.status == 401  # its script goes on at once: no body to read
        page.wait_for_url("**/auth/login**")  # the page sends the browser on to Airflow's login
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(airflow.password_of("admin"))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url)
        # The task instance's "Details" tab lists its extra links.
        page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/process_order_wait/details")
        _click_the_link_to_the_run_page(page, run, airflow.version)


class _same_page:  # noqa: N801 - used as Playwright's expect_page() is
    """A link that opens in the same tab: ``value`` is the tab itself once it has navigated."""

    def __init__(self, page: Any) -> None:
        self.value = page

    def __enter__(self) -> _same_page:
        return self

    def __exit__(self, *exc: object) -> None:
        self.value.wait_for_url("**/octorpa/v1/run?**")
