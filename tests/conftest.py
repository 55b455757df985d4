"""Test harness: a private Airflow home with SQLite, and the webhook emulator on a free loopback port.

The Airflow environment variables are set here, before any test module imports Airflow.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO / "example_dags"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="octorpa-test-airflow-home-"))
os.environ.update(
    {
        "AIRFLOW_HOME": str(_AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE_DAGS),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        # The tests sweep when they mean to (tests/test_run_records.py): records they write by hand
        # name DAG runs that do not exist.
        "AIRFLOW__OCTORPA__SWEEP_INTERVAL": "0",
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


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated metadata database with the ``octorpa`` pool, made once per session."""
    for args in (
        ("db", "migrate"),
        ("pools", "set", "octorpa", "5", "Octopus RPA webhook calls", "--include-deferred"),
    ):
        done = airflow_cli(*args)
        assert done.returncode == 0, done.stdout + done.stderr
    publish_pools()
    return _AIRFLOW_HOME


def publish_pools() -> None:
    """What the provider's listener does in the scheduler when a DAG run starts (``dag.test()`` does
    not call it): tell Airflow 3's workers which pools count deferred tasks."""
    from airflow.utils.session import create_session

    from airflow_octorpa.pool_facts import publish_pool_facts

    with create_session() as session:
        publish_pool_facts(session)


@pytest.fixture(scope="session", autouse=True)
def _one_in_process_execution_api() -> None:
    """Airflow 3's ``dag.test()`` builds its in-process execution API (a FastAPI app whose routes
    cadwyn versions) anew for every task it runs: about 2 s of CPU each, half of the suite's time.
    One per test session serves every task the same way (each run still sets its own DAG bag)."""
    try:
        from airflow.sdk.execution_time import supervisor
    except ImportError:  # Airflow 2: dag.test() runs tasks without an execution API
        return
    if hasattr(supervisor, "in_process_api_server"):
        supervisor.in_process_api_server = functools.cache(supervisor.in_process_api_server)


@pytest.fixture(scope="session")
def _emulator_server() -> Iterator[Any]:
    from airflow_octorpa.emulator import OctoRpaEmulator

    with OctoRpaEmulator() as emulator:
        yield emulator


@pytest.fixture
def emulator(_emulator_server: Any) -> Any:
    """The emulator with the built-in account, its records and rate-limit windows cleared."""
    _emulator_server.state.reset()
    return _emulator_server


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


@pytest.fixture
def order_conn(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """``octorpa_default`` pointing at the emulator's signed order-processing webhook."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits=FAST_LIMITS),
    )
    return "octorpa_default"


@pytest.fixture
def forget_masked_secrets() -> Iterator[None]:
    """Airflow 2 masks every connection password it reads, however short, in all later output of
    the process: a generated secret such as "0" would mask digits in every later test."""
    yield
    try:
        from airflow.utils.log.secrets_masker import _secrets_masker  # Airflow 2
    except ImportError:
        return  # Airflow 3 masks nothing shorter than [logging] min_length_masked_secret
    masker = _secrets_masker()
    masker.patterns = set()
    masker.replacer = None
