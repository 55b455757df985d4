"""Fixtures: the migrated metadata database, the webhook emulator on a free loopback port, connections.

``tests.support.settings`` (imported first) sets the private Airflow home before anything imports
Airflow.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.settings import (
    AIRFLOW_HOME,
    FAST_LIMITS,
    ORDER_SECRET,
    ORDER_WEBHOOK,
    airflow_cli,
    connection_json,
    publish_pools,
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
    return AIRFLOW_HOME


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


@pytest.fixture(scope="session", autouse=True)
def _reschedule_dates_parsed_as_a_worker_parses_them() -> None:
    """Airflow 3.0's client builds the first reschedule date with ``model_construct``, leaving it a
    string. A worker never sees that (the supervisor's socket message is parsed into a datetime),
    but ``dag.test()`` hands it over in-process, and a reschedule sensor then fails on
    ``utcnow() - str``. Airflow 3.1 parses it; here 3.0's is parsed as 3.1 does."""
    try:
        from airflow.sdk.api.client import TaskInstanceOperations, TaskRescheduleStartDate
    except ImportError:  # Airflow 2
        return
    fetch = TaskInstanceOperations.get_reschedule_start_date

    @functools.wraps(fetch)
    def parsed(self: Any, *args: Any, **kwargs: Any) -> Any:
        answer = fetch(self, *args, **kwargs)
        if isinstance(getattr(answer, "start_date", None), str):
            return TaskRescheduleStartDate(start_date=answer.start_date)
        return answer

    TaskInstanceOperations.get_reschedule_start_date = parsed  # type: ignore[method-assign]


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
