"""The report path through real components on PostgreSQL, where a text holding U+0000 and deeply
nested JSON used to fail (JSONB ``next_kwargs`` on 3.2 and 3.3, JSONB XCom since 3.0): the real
api-server refuses every report the database or the triggerer could not carry, with 400 and no
row written; the wait it was sent to still ends with the app's real report, a deferred wait
started after them succeeds, and the triggerer's log holds no report's content. The components
run on Airflow's default settings (examples loaded, default scheduler, dag-processor and triggerer
timings), as users run them: none of them logs an error about the provider.

Airflow 3.3 in ``make test-distributed``, 3.2 in ``make test-compat``; Airflow 2.11's webserver
refuses the same reports on PostgreSQL in ``tests/test_scheduler.py``.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support.airflow_cluster import AirflowCluster
from tests.support.airflow_helpers import AIRFLOW_VERSION
from tests.support.callback_server import BAD_REPORTS, send_bad_reports
from tests.support.limits_check import SCALED_LIMITS, scaled_emulator
from tests.support.settings import ORDER_SECRET

pytestmark = pytest.mark.skipif(
    AIRFLOW_VERSION.release[:2] not in ((3, 2), (3, 3)), reason="PostgreSQL's JSONB columns of Airflow 3.2 and 3.3"
)

TESTS = Path(__file__).resolve().parent.parent / "tests"


@pytest.fixture(scope="module")
def deployment():
    from cryptography.fernet import Fernet

    from tests.support.services import PostgresServer, ensure_installed

    if (impossible := ensure_installed({"initdb": "postgresql"})) is not None:
        pytest.skip(f"needs PostgreSQL: {impossible}")
    fernet_key = Fernet.generate_key().decode()
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(scaled_emulator())
        postgres = stack.enter_context(PostgresServer())
        home = Path(tempfile.mkdtemp(prefix="octorpa-pg-reports-"))
        cluster = AirflowCluster(
            home,
            TESTS / "dags",
            plugins_folder=TESTS / "plugins",
            sql_alchemy_conn=postgres.url,
            extra_env={"AIRFLOW__CORE__FERNET_KEY": fernet_key, **_airflows_defaults()},
        )
        cluster.prepare(
            {
                "octorpa_callbacks": {
                    "conn_type": "octorpa",
                    "host": emulator.webhook_url("callback-app"),
                    "password": ORDER_SECRET,
                    "extra": {"rate_limits": SCALED_LIMITS},
                }
            }
        )
        stack.enter_context(cluster)
        cluster.start()
        yield emulator, cluster, Fernet(fernet_key.encode())


def _airflows_defaults() -> dict[str, str]:
    """What AirflowCluster tunes for speed, put back to Airflow's own defaults."""
    from airflow.configuration import conf

    tuned = [
        ("core", "load_examples"),
        ("core", "dags_are_paused_at_creation"),  # Airflow's example DAGs stay paused, as they do for users
        ("scheduler", "scheduler_idle_sleep_time"),
        ("dag_processor", "refresh_interval"),
        ("dag_processor", "min_file_process_interval"),
        ("triggerer", "job_heartbeat_sec"),
    ]
    defaults = {(s, k): conf.get_default_value(s, k, fallback=None) for s, k in tuned}
    return {f"AIRFLOW__{s.upper()}__{k.upper()}": str(v) for (s, k), v in defaults.items() if v is not None}


def _plant_stray_record(cluster) -> str:
    import psycopg2

    key = "octorpa_report." + uuid.uuid4().hex
    value = json.dumps({"dag_id": "octorpa_wait", "run_id": "deleted_run", "status": "waiting"})
    with psycopg2.connect(cluster.sql_alchemy_conn.replace("postgresql+psycopg2://", "postgresql://")) as db:
        with db.cursor() as cursor:
            cursor.execute("INSERT INTO variable (key, val, is_encrypted) VALUES (%s, %s, false)", (key, value))
    return key


def _report_rows(cluster, fernet) -> dict[str, dict]:
    rows = cluster._query("SELECT key, val, is_encrypted FROM variable WHERE key LIKE ?", "octorpa_report.%")
    return {key: json.loads(fernet.decrypt(val.encode()) if encrypted else val) for key, val, encrypted in rows}


@pytest.mark.timeout(600)
def test_reports_postgresql_cannot_carry_are_refused_and_the_waits_still_end(deployment):
    from airflow_octorpa.emulator import WebhookSpec

    emulator, cluster, fernet = deployment
    marker = f"SF-{uuid.uuid4().hex[:12]}"  # the report's content: it must not reach the triggerer's log
    emulator.state.reset()
    emulator.state.put_webhook(
        WebhookSpec.reporting_app("callback-app", ORDER_SECRET, after=30, outputs={"waybill": marker})
    )
    stray = _plant_stray_record(cluster)  # as a deleted DAG run leaves one: only a sweep removes it
    cluster.wait_for_dags("octorpa_wait", timeout=420)  # beside Airflow's example DAGs
    cluster.cli("dags", "unpause", "octorpa_wait")
    cluster.trigger("octorpa_wait", "bad_reports", {})
    cluster.wait_for(lambda: len(emulator.state.snapshot("runs")) == 1, 180, "the app's run")
    url = emulator.state.snapshot("runs")[0]["params"]["airflow_callback_url"]
    cluster.wait_for(lambda: len(_report_rows(cluster, fernet)) == 2, 60, "the call's registration")
    before = _report_rows(cluster, fernet)
    assert send_bad_reports(url) == dict.fromkeys(BAD_REPORTS, 400)
    assert _report_rows(cluster, fernet) == before  # nothing stored, no row created
    assert [r["status"] for k, r in before.items() if k != stray] == ["waiting"]

    assert cluster.wait_for_run("octorpa_wait", "bad_reports", timeout=300) == "success", cluster.log_tail()
    assert cluster.xcom_values("octorpa_wait", "bad_reports", "ship") == {-1: marker}
    # The api-server, which every deployment with callbacks runs, swept it when the report came.
    assert stray not in _report_rows(cluster, fernet)
    assert (
        "Swept the Octopus RPA provider's records" in (cluster.home / "component-logs" / "api-server.log").read_text()
    )

    emulator.state.reset()
    emulator.state.put_webhook(
        WebhookSpec.reporting_app("callback-app", ORDER_SECRET, after=3, outputs={"waybill": "SF-after"})
    )
    cluster.trigger("octorpa_wait", "after_them", {})
    assert cluster.wait_for_run("octorpa_wait", "after_them", timeout=300) == "success", cluster.log_tail()
    assert cluster.xcom_values("octorpa_wait", "after_them", "ship") == {-1: "SF-after"}
    assert _report_rows(cluster, fernet) == {}  # both DAG runs ended: their records went with them
    triggerer_logs = [p for p in (cluster.home / "component-logs").glob("*.log") if "triggerer" in p.name]
    assert triggerer_logs and not [p for p in triggerer_logs if marker in p.read_text(errors="replace")]
    for log in (cluster.home / "component-logs").glob("*.log"):  # examples loaded: Airflow 3.3 looks for ours
        assert "Could not load provider module" not in log.read_text(errors="replace"), log
    # The listener's chores (records, pools) ran outside the scheduler's transaction, and none failed.
    scheduler = (cluster.home / "component-logs" / "scheduler.log").read_text(errors="replace")
    failed = re.findall(r"Could not [^\n]*Octopus RPA[^\n]*", scheduler)  # the chores' own warnings
    assert failed == [] and "UNEXPECTED COMMIT" not in scheduler, failed[:3]
    assert "Published which pools count deferred tasks" in scheduler
