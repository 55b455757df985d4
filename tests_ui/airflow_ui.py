"""One Airflow version's web server for the browser tests: a webserver (Airflow 2) or an api-server
(Airflow 3), from its own ``.venv-af<version>``, in a private home, on a free loopback port."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from scripts.test_compat import ensure_venv
from tests.support.airflow_cluster import free_port, kill_processes_of_home, stop_groups
from tests.support.cli_output import json_output


class AirflowUi:
    """A webserver (Airflow 2) or api-server (Airflow 3) of one version, in a private home."""

    def __init__(self, version: str, *, all_admins: bool = True) -> None:
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
                # Airflow 3's api-server: everyone is an admin, so the test needs no login; else one
                # user, admin, whose password the simple auth manager generates (password_of())
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(all_admins),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
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

    def password_of(self, user: str) -> str:
        """A user's password: Airflow 3's simple auth manager's generated one, Airflow 2's "admin"."""
        if self.major == 2:
            return "admin"
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())[user]

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
