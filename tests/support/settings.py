"""The suites' private Airflow home (SQLite), set before anything imports Airflow, and the settings
of the emulator's built-in accounts. Imported first by ``tests/conftest.py``, and by any suite that
uses these helpers without it."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="octorpa-test-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # The tests sweep when they mean to (tests/test_run_records.py): records they write by hand
        # name DAG runs that do not exist.
        "AIRFLOW__OCTORPA__SWEEP_INTERVAL": "0",
        # One key for this process and every process it starts, as one deployment shares one: else
        # each `airflow` command would write a new one to airflow.cfg after this process read it.
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
    }
)
os.environ.pop("AIRFLOW_CONN_OCTORPA_DEFAULT", None)

ORDER_WEBHOOK = "order-processing"
ORDER_SECRET = "demo-order-secret"
VENDOR_WEBHOOK = "vendor-example"
VENDOR_SECRET = "SEC123"


def airflow_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``airflow`` command of this environment with the test Airflow home."""
    airflow = Path(sys.executable).with_name("airflow")
    return subprocess.run(
        [str(airflow), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def publish_pools() -> None:
    """What the provider's listener does in the scheduler when a DAG run starts (``dag.test()`` does
    not call it): tell Airflow 3's workers which pools count deferred tasks."""
    from airflow.utils.session import create_session

    from airflow_octorpa.pool_facts import publish_pool_facts

    with create_session() as session:
        publish_pool_facts(session)


def connection_json(url: str, secret: str | None = None, **extra: Any) -> str:
    """An ``AIRFLOW_CONN_...`` value in Airflow's JSON form."""
    conn: dict[str, Any] = {"conn_type": "octorpa", "host": url}
    if secret is not None:
        conn["password"] = secret
    if extra:
        conn["extra"] = extra
    return json.dumps(conn)


# Limits for connections in tests that are not about the rate limit: a slot hold of 0.05 s, so
# tests do not wait out the vendor's 15 s. The emulator still enforces the real limits.
FAST_LIMITS = "100/second"
