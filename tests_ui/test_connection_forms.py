"""``make test-ui``: the Octopus RPA connection form in a real browser, on Airflow 2.11 and 3.

Airflow 2.11's webserver (Flask AppBuilder) and Airflow 3.0's api-server (React) build the form
from the hook's ``get_connection_form_widgets`` / ``get_ui_field_behaviour``; Airflow 3.3's from
the provider's ``conn-fields`` / ``ui-field-behaviour``. Each server runs from its own
``.venv-af<version>`` on a free loopback port, with ``[core] test_connection`` enabled and the
webhook emulator behind the URL. Headless Chromium comes from Debian's ``chromium`` package
(with ``fonts-wqy-zenhei`` for the Chinese labels), driven by Playwright's Python package through
``executable_path``; where they cannot be installed the suite skips, saying why.

Each test chooses the type, checks labels, hidden fields, placeholders and help text, saves a
connection, reads it back through that version's Airflow, presses "Test" (no run may start;
Airflow 3.0's UI has none, so there ``airflow connections test`` does), and saves a screenshot to
``docs/pages/images/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_octorpa.emulator import OctoRpaEmulator
from tests_ui.airflow_ui import AirflowUi

REPO = Path(__file__).resolve().parent.parent

DOCS = REPO / "docs" / "pages" / "images"
WEBHOOK = "order-processing"
SECRET = "demo-order-secret"
ROBOT = "robot-warehouse-01"
LABELS = {
    "host": "Webhook URL (Webhook地址)",
    "password": "Signing secret (签名密钥)",
    "bot_id": "Robot ID (机器人ID)",
    "timeout": "Timeout (seconds)",
    "rate_limits": "Rate limits",
    "pool": "Pool",
    "pool_size": "Pool size",
}
HELP = {
    "bot_id": "a task's bot_id overrides it",
    "pool_size": "not Airflow's slots per task",
}


def _screenshot(page: Any, version: str) -> None:
    DOCS.mkdir(exist_ok=True)
    major_minor = ".".join(version.split(".")[:2])
    page.screenshot(path=str(DOCS / f"connection-form-airflow-{major_minor}.png"), full_page=True)


def _no_run_started(emulator: OctoRpaEmulator) -> None:
    assert emulator.state.snapshot("runs") == []
    assert emulator.state.snapshot("calls") == []  # "Test" sends a HEAD, which starts nothing


@pytest.mark.timeout(900)  # a missing .venv-af<version> is built first
def test_airflow_2_11_form_from_the_hooks_methods(browser, emulator):
    emulator.state.reset()
    with AirflowUi("2.11.2") as airflow:
        page = browser.new_page(viewport={"width": 1280, "height": 1300}, locale="en-US")
        page.goto(airflow.url + "/login/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "admin")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_load_state()
        page.goto(airflow.url + "/connection/add")
        page.select_option("#conn_type", "octorpa")

        def label_of(field_id: str) -> str:
            return page.locator(f"#{field_id}").locator("xpath=ancestor::tr").locator("label").inner_text().strip()

        assert label_of("host") == LABELS["host"] and label_of("password") == LABELS["password"]
        assert page.locator("#password").get_attribute("type") == "password"
        for field in ("bot_id", "timeout", "rate_limits", "pool", "pool_size"):
            assert label_of(f"extra__octorpa__{field}") == LABELS[field]
            assert page.locator(f"#extra__octorpa__{field}").is_visible()
        for hidden in ("schema", "login", "port", "extra"):
            assert not page.locator(f"#{hidden}").is_visible(), hidden
        assert "/bots/webhooks/<webhookId>/invoke" in page.locator("#host").get_attribute("placeholder")
        assert page.locator("#extra__octorpa__pool_size").get_attribute("placeholder") == "5"
        for field, text in HELP.items():
            assert text in page.locator(f"#extra__octorpa__{field}").locator("xpath=ancestor::td").inner_text()

        page.fill("#conn_id", "octorpa_ui")
        page.fill("#host", emulator.webhook_url(WEBHOOK))
        page.fill("#password", SECRET)
        page.fill("#extra__octorpa__bot_id", ROBOT)
        page.fill("#extra__octorpa__pool_size", "5")
        with page.expect_response(lambda r: r.url.endswith("/connections/test")) as tested:
            page.click("#test-connection")
        result = tested.value.json()
        assert result["status"] is True and "No RPA run was started" in result["message"], result
        page.wait_for_timeout(500)  # the answer's alert
        _screenshot(page, airflow.version)
        page.click("button[type=submit]:has-text('Save')")
        page.wait_for_load_state()

        stored = airflow.stored_connection("octorpa_ui")
        assert stored["conn_type"] == "octorpa" and stored["host"] == emulator.webhook_url(WEBHOOK)
        assert stored["password"] == SECRET and stored["extra_dejson"]["bot_id"] == ROBOT  # the names the hook reads
        assert stored["hook"] == {"bot_id": ROBOT, "pool_size": 5, "url": emulator.webhook_url(WEBHOOK)}
        _no_run_started(emulator)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("version", ["3.0.6", "3.3.2"])
def test_airflow_3_form(browser, emulator, version):
    emulator.state.reset()
    with AirflowUi(version) as airflow:
        page = browser.new_page(viewport={"width": 1280, "height": 1300}, locale="en-US")
        page.goto(airflow.url + "/connections")
        page.get_by_role("button", name="Add Connection").click()
        page.get_by_label("Connection ID").fill("octorpa_ui")
        choose = page.get_by_role("combobox")
        choose.click()
        choose.fill("Octopus")
        page.get_by_role("option", name="八爪鱼RPA (Octopus RPA) Webhook").click()

        dialog = page.get_by_role("dialog")
        host, password = dialog.get_by_label(LABELS["host"]), dialog.get_by_label(LABELS["password"])
        assert "/bots/webhooks/<webhookId>/invoke" in host.get_attribute("placeholder")
        assert password.get_attribute("type") == "password"
        for hidden in ("schema", "login", "port"):
            assert dialog.locator(f"input[name={hidden}]").count() == 0, hidden
        host.fill(emulator.webhook_url(WEBHOOK))
        password.fill(SECRET)
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()  # 3.0 folds Standard Fields then
        for field in ("bot_id", "timeout", "rate_limits", "pool", "pool_size"):
            box = dialog.locator(f"input[name=element_{field}]")
            assert box.is_visible(), field
            label = box.evaluate(_NEAREST_LABEL).strip()
            assert label.startswith(LABELS[field]), (field, label)
        form_text = dialog.inner_text()
        assert all(text in form_text for text in HELP.values())

        dialog.locator("input[name=element_bot_id]").fill(ROBOT)
        dialog.locator("input[name=element_pool_size]").fill("5")
        _screenshot(page, airflow.version)
        dialog.get_by_role("button", name="Save").click()
        page.get_by_role("row").filter(has_text="octorpa_ui").wait_for()

        stored = airflow.stored_connection("octorpa_ui")
        assert stored["conn_type"] == "octorpa" and stored["host"] == emulator.webhook_url(WEBHOOK)
        assert stored["password"] == SECRET and stored["extra_dejson"]["bot_id"] == ROBOT and stored["port"] is None
        assert stored["hook"] == {"bot_id": ROBOT, "pool_size": 5, "url": emulator.webhook_url(WEBHOOK)}

        # Where the UI has no "Test" (3.0), the CLI tests the connection the form saved.
        tested = airflow.cli("connections", "test", "octorpa_ui")
        assert "Connection success!" in tested, tested
        if version.startswith("3.0."):
            assert _row(page, "octorpa_ui").get_by_role("button", name="Test Connection").count() == 0
            _no_run_started(emulator)
            return
        # The list's "Test" sends port 0 for a connection without one, and the server refuses it as
        # another destination (Airflow's behaviour, in the README); with the URL's port stored it works.
        result = _press_test(page, "octorpa_ui")
        assert result["status"] == 400 and "host or port to test differs" in result["body"], result
        assert "Bad Request" in page.get_by_text("Test Connection Failed").locator("xpath=..").inner_text()
        airflow.cli(
            "connections", "add", "octorpa_ui_port", "--conn-json",
            json.dumps({"conn_type": "octorpa", "host": emulator.webhook_url(WEBHOOK), "password": SECRET,
                        "port": emulator.port, "extra": {"bot_id": ROBOT}}),
        )  # fmt: skip
        page.reload()
        result = _press_test(page, "octorpa_ui_port")
        assert result["status"] == 200 and json.loads(result["body"])["status"] is True, result
        assert "No RPA run was started" in json.loads(result["body"])["message"]
        _no_run_started(emulator)


# The text of the label nearest an input: its field's (the React form links them differently by version).
_NEAREST_LABEL = """input => {
    for (let node = input.parentElement; node; node = node.parentElement) {
        const label = node.querySelector('label');
        if (label) return label.innerText;
    }
    return '';
}"""


def _row(page: Any, conn_id: str) -> Any:
    return page.get_by_role("row").filter(has=page.get_by_text(conn_id, exact=True))


def _press_test(page: Any, conn_id: str) -> dict[str, Any]:
    with page.expect_response(lambda r: r.url.endswith("/connections/test")) as tested:
        _row(page, conn_id).get_by_role("button", name="Test Connection").click()
    return {"status": tested.value.status, "body": tested.value.text()}
