"""The example DAGs load cleanly and run end to end with ``dag.test()`` against the emulator."""

from __future__ import annotations

import pytest

from tests.support.airflow_helpers import AIRFLOW_V_3, dag_bag, task_states, xcom_return_values
from tests.support.callback_server import report_route
from tests.support.settings import EXAMPLE_DAGS

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def dagbag():
    return dag_bag(EXAMPLE_DAGS)


def test_example_dags_load_without_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {"example_octorpa_order", "example_octorpa_mapped_orders", "example_octorpa_wait"} <= set(dagbag.dag_ids)
    for dag_id in ("example_octorpa_order", "example_octorpa_mapped_orders"):
        assert dagbag.dags[dag_id].get_task("process_order").pool == "octorpa"


def test_order_example_runs_end_to_end(dagbag, emulator, order_conn):
    dag_run = dagbag.dags["example_octorpa_order"].test()

    assert set(task_states(dag_run).values()) == {"success"}
    (run,) = emulator.state.snapshot("runs")
    assert run["app"] == "订单处理"
    assert run["params"] == {"订单号": "SO-1001", "数量": 10, "收货地址": "上海市浦东新区世纪大道100号"}
    assert xcom_return_values(dag_run, "process_order")[-1]["flow_process_no"] == run["flow_process_no"]
    assert xcom_return_values(dag_run, "report") == {-1: run["flow_process_no"]}


def test_mapped_orders_example_starts_one_run_per_order(dagbag, emulator, order_conn):
    dag_run = dagbag.dags["example_octorpa_mapped_orders"].test()

    assert set(task_states(dag_run).values()) == {"success"}
    runs = emulator.state.snapshot("runs")
    assert sorted(r["params"]["订单号"] for r in runs) == ["SO-2001", "SO-2002", "SO-2003"]
    assert sorted(xcom_return_values(dag_run, "summarise")[-1]) == sorted(r["flow_process_no"] for r in runs)


def test_wait_example_hands_the_apps_outputs_downstream(dagbag, emulator, order_conn, monkeypatch):
    with report_route() as base:
        monkeypatch.setenv("AIRFLOW__OCTORPA__CALLBACK_BASE_URL", base)
        dag_run = dagbag.dags["example_octorpa_wait"].test()

    assert set(task_states(dag_run).values()) == {"success"}
    runs = emulator.state.snapshot("runs")
    assert sorted(r["params"]["订单号"] for r in runs) == ["SO-3001", "SO-3002", "SO-3003"]
    assert xcom_return_values(dag_run, "ship") == {-1: "SF1000000001"}
    waits = xcom_return_values(dag_run, "wait_orders")
    assert sorted(w["flow_process_no"] for w in waits.values()) == sorted(
        r["flow_process_no"] for r in runs if r["params"]["订单号"] != "SO-3001"
    )


def test_inbox_example_is_scheduled_by_the_inbox_asset_on_airflow_3_and_absent_on_2(dagbag):
    if not AIRFLOW_V_3:
        assert "example_octorpa_inbox" not in dagbag.dag_ids
        return
    dag = dagbag.dags["example_octorpa_inbox"]
    (asset,) = dag.timetable.asset_condition.objects  # schedule=[orders]: all of one asset
    (watcher,) = asset.watchers
    assert asset.uri == "octorpa://inbox/orders"
    assert watcher.trigger.serialize() == (
        "airflow_octorpa.triggers.inbox.OctoRpaInboxTrigger",
        {"inbox": "orders", "poll_interval": 1.0},
    )
