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
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_octorpa.emulator import OctoRpaEmulator
from scripts.test_compat import ensure_venv
from tests.support.airflow_cluster import free_port, kill_processes_of_home, stop_groups
from tests.support.cli_output import json_output
from tests.support.services import ensure_installed

REPO = Path(__file__).resolve().parent.parent

DOCS = REPO / "docs" / "pages" / "images"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
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


@pytest.fixture(scope="session")
def chromium() -> str:
    impossible = ensure_installed({"chromium": "chromium", CJK_FONT: "fonts-wqy-zenhei"})
    if impossible is not None:
        pytest.skip(f"Chromium or the CJK font cannot be installed here: {impossible}")
    pytest.importorskip("playwright", reason="Playwright's Python package is not installed (the 'ui' extra)")
    return shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def emulator() -> Iterator[OctoRpaEmulator]:
    with OctoRpaEmulator() as emulator:
        yield emulator


class AirflowUi:
    """A webserver (Airflow 2) or api-server (Airflow 3) of one version, in a private home."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.major = int(version.split(".")[0])
        self.bin = ensure_venv(version) / "bin"
        self.home = Path(tempfile.mkdtemp(prefix=f"octorpa-ui-{version}-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
        self.env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                # Airflow 2.11's webserver
                "AIRFLOW__WEBSERVER__WORKERS": "1",
                "AIRFLOW__WEBSERVER__SECRET_KEY": secrets.token_hex(16),
                # Airflow 3's api-server: everyone is an admin, so the test needs no login
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__API__BASE_URL": self.url,
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            }
        )
        self.process: subprocess.Popen | None = None

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin / "airflow"), *args], env=self.env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        return done.stdout

    def __enter__(self) -> AirflowUi:
        self.cli("db", "migrate")
        if self.major == 2:
            self.cli("users", "create", "-r", "Admin", "-u", "admin", "-p", "admin", "-e", "a@example.com",
                     "-f", "Ada", "-l", "Admin")  # fmt: skip
            args = ["webserver", "--port", str(self.port), "--hostname", "127.0.0.1"]
        else:
            args = ["api-server", "--port", str(self.port), "--host", "127.0.0.1"]
        log = (self.home / "server.log").open("w")
        self.process = subprocess.Popen(
            [str(self.bin / "airflow"), *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 240
        health = "/health" if self.major == 2 else "/api/v2/monitor/health"
        while not _answers(self.url + health):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Airflow {self.version}'s server did not start:\n{self.log_tail()}")
            time.sleep(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            stop_groups([self.process])
        kill_processes_of_home(self.home)

    def log_tail(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")[-4000:]

    def stored_connection(self, conn_id: str) -> dict[str, Any]:
        """The connection as this Airflow's CLI reads it back, and the settings its hook makes of it."""
        (stored,) = json_output(self.cli("connections", "get", conn_id, "--output", "json"))
        as_env = {k: stored[k] for k in ("conn_type", "host", "port", "password") if stored.get(k) is not None}
        as_env["extra"] = stored["extra_dejson"]
        script = (
            "import json\n"
            "from airflow_octorpa.hooks.octorpa import OctoRpaHook\n"
            "config = OctoRpaHook('octorpa_read_back').config\n"
            "print(json.dumps({'bot_id': config.bot_id, 'pool_size': config.pool_size, 'url': config.url}))\n"
        )
        done = subprocess.run(
            [str(self.bin / "python"), "-c", script],
            env={**self.env, "AIRFLOW_CONN_OCTORPA_READ_BACK": json.dumps(as_env)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return {**stored, "hook": json.loads(done.stdout.strip().splitlines()[-1])}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


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
