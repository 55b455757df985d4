"""The provider's Variables of a DAG run: removed by key when the run ends (never another run's),
and swept when no listener removed them (a deleted run, a run that ended long ago). Real DAG runs
through ``dag.test()``; the records are written by the running task, as the operator writes them."""

from __future__ import annotations

import datetime
import json
import time

import pytest

from airflow_octorpa.run_records import sweep
from airflow_octorpa.storage import REPORT_PREFIX, ti_keys
from tests.support.airflow_helpers import run_dag, task_states, xcom_return_values
from tests.support.cli_output import octorpa

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
LEGACY = REPORT_PREFIX + "ab" * 32  # a record of an earlier 0.3 build: its key names no task instance

pytestmark = pytest.mark.usefixtures("airflow_db")


def _keys(*keys: str) -> set[str]:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return set(session.scalars(select(Variable.key).where(Variable.key.in_(keys))))


def _run_writing_records(dag_id: str, sweep_while_running: bool = False):
    """A DAG run whose task writes its own four records, an earlier build's record of its run, and the records
    of another run of the same DAG (which does not exist)."""
    from airflow.providers.common.compat.sdk import DAG, Variable, task

    @task
    def write_records(**context):
        ti = context["ti"]
        names = {"dag_id": ti.dag_id, "run_id": ti.run_id}
        own = ti_keys(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
        other = ti_keys(ti.dag_id, "gone_run", ti.task_id, ti.map_index)
        for key in own + [LEGACY]:
            Variable.set(key, json.dumps(names))
        for key in other:
            Variable.set(key, json.dumps({**names, "run_id": "gone_run"}))
        swept = None
        if sweep_while_running:
            from airflow.utils.session import create_session

            with create_session() as session:
                swept = sweep(session, retention_seconds=0).removed
        return {"own": own, "other": other, "kept_while_running": sorted(_keys(*own, LEGACY)), "swept": swept}

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        write_records()
    dag_run = run_dag(dag)
    assert task_states(dag_run) == {("write_records", -1): "success"}
    return xcom_return_values(dag_run, "write_records")[-1]


def test_a_dag_runs_end_removes_its_records_by_key_and_no_other_runs():
    seen = _run_writing_records("records_by_key")
    assert _keys(*seen["own"]) == set()  # the run ended: its records went with it
    assert _keys(*seen["other"]) == set(seen["other"])  # another run's were not touched
    assert _keys(LEGACY) == {LEGACY}  # nor a record it cannot find by key: the sweep's


def test_the_sweep_removes_records_of_gone_runs_and_long_ended_ones_never_a_running_runs():
    from airflow.utils.session import create_session

    seen = _run_writing_records("records_swept", sweep_while_running=True)
    assert seen["kept_while_running"] == sorted([*seen["own"], LEGACY])  # their run was running
    assert seen["swept"] >= len(seen["other"]) and _keys(*seen["other"]) == set()  # their run does not exist
    for key in seen["own"]:  # left behind, as Airflow 2.11 leaves them when a run is marked from the UI
        _put(key, {"dag_id": "records_swept", "run_id": _run_id("records_swept")})
    with create_session() as session:
        sweep(session, retention_seconds=3600)
    assert _keys(*seen["own"], LEGACY) == {*seen["own"], LEGACY}  # the run ended seconds ago: kept
    with create_session() as session:
        assert sweep(session, retention_seconds=0, now=time.time() + 1).removed == len(seen["own"]) + 1
    assert _keys(*seen["own"], LEGACY) == set()


def test_octorpa_cleanup_says_what_it_removed():
    _put(REPORT_PREFIX + "cd" * 32, {"dag_id": "no_such_dag", "run_id": "no_such_run"})
    _put(REPORT_PREFIX + "ef" * 32, {"not": "a record"})
    done = octorpa("cleanup", "--older-than", "0")
    assert done.returncode == 0, done.stderr
    assert "octorpa cleanup: removed 1," in done.stdout and "1 unreadable" in done.stdout, done.stdout
    assert _keys(REPORT_PREFIX + "cd" * 32) == set()
    assert octorpa("cleanup", "--older-than", "-1").returncode == 2


def _put(key: str, value: dict) -> None:
    from airflow.models.variable import Variable

    Variable.set(key, json.dumps(value))


def _run_id(dag_id: str) -> str:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id))
