"""The operator's templating and XCom output, run for real with ``dag.test()`` against the emulator."""

from __future__ import annotations

import datetime

import pytest

from airflow_octorpa.exceptions import OctoRpaInvalidParamsError
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator, rendered_app_params
from tests.support.airflow_helpers import rendered_fields, run_dag, task_states, xcom_return_values

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)

pytestmark = pytest.mark.usefixtures("airflow_db")


def _dag(dag_id: str, **kwargs):
    from airflow.providers.common.compat.sdk import DAG

    return DAG(dag_id=dag_id, schedule=None, start_date=START, catchup=False, **kwargs)


def _only_run(emulator) -> dict:
    (run,) = emulator.state.snapshot("runs")
    return run


def test_literal_values_keep_their_type_and_result_lands_in_xcom(emulator, order_conn):
    with _dag("op_literals") as dag:
        op = OctoRpaTriggerOperator(task_id="trigger", app_params={"订单号": "SO-1", "数量": 10, "加急": False})
    dag_run = run_dag(dag)

    run = _only_run(emulator)
    assert run["params"] == {"订单号": "SO-1", "数量": 10, "加急": False}
    assert type(run["params"]["数量"]) is int
    assert xcom_return_values(dag_run, "trigger") == {
        -1: {
            "flow_process_no": run["flow_process_no"],
            "flow_id": "flow-order-processing",
            "enterprise_id": emulator.state.config.enterprise_id,
        }
    }
    assert op.pool == "octorpa"


def test_xcomargs_resolve_to_native_values_nested_included(emulator, order_conn):
    from airflow.providers.common.compat.sdk import task

    with _dag("op_xcomargs") as dag:

        @task(multiple_outputs=True)
        def extract() -> dict:
            return {"order_no": "SO-7", "lines": [{"sku": "A-1", "qty": 2}], "total": 99.5}

        # multiple_outputs=False: Chinese XCom keys break dag.test() (see README, known issues)
        @task(multiple_outputs=False)
        def address() -> dict:
            return {"城市": "上海", "邮编": 200000}

        order = extract()
        OctoRpaTriggerOperator(
            task_id="trigger",
            app_params={"订单号": order["order_no"], "明细": order["lines"], "金额": order["total"], "地址": address()},
        )
    run_dag(dag)

    assert _only_run(emulator)["params"] == {
        "订单号": "SO-7",
        "明细": [{"sku": "A-1", "qty": 2}],
        "金额": 99.5,
        "地址": {"城市": "上海", "邮编": 200000},
    }


@pytest.mark.parametrize(("native", "expected"), [(False, "10"), (True, 10)])
def test_jinja_strings_render_to_strings_unless_the_dag_renders_native(emulator, order_conn, native, expected):
    from airflow.providers.common.compat.sdk import task

    with _dag(f"op_jinja_native_{native}", render_template_as_native_obj=native) as dag:

        @task
        def count() -> dict:
            return {"n": 10}

        count() >> OctoRpaTriggerOperator(
            task_id="trigger",
            app_params={"数量": "{{ ti.xcom_pull(task_ids='count')['n'] }}", "备注": "run {{ run_id }}"},
        )
    dag_run = run_dag(dag)

    params = _only_run(emulator)["params"]
    assert params["数量"] == expected and type(params["数量"]) is type(expected)
    assert params["备注"] == f"run {dag_run.run_id}"
    assert rendered_fields(dag_run, "trigger")["app_params"]["备注"] == f"run {dag_run.run_id}"


def test_whole_app_params_template_renders_to_a_mapping(emulator, order_conn):
    from airflow.providers.common.compat.sdk import task

    with _dag("op_whole_template") as dag:

        @task(multiple_outputs=False)
        def extract() -> dict:
            return {"订单号": "SO-9", "数量": 3, "收货地址": "北京"}

        extract() >> OctoRpaTriggerOperator(task_id="trigger", app_params="{{ ti.xcom_pull(task_ids='extract') }}")
    run_dag(dag)

    assert _only_run(emulator)["params"] == {"订单号": "SO-9", "数量": 3, "收货地址": "北京"}


def test_whole_template_that_is_not_a_mapping_fails_without_calling(emulator, order_conn):
    with _dag("op_whole_template_bad") as dag:
        OctoRpaTriggerOperator(task_id="trigger", app_params="{{ run_id }}")
    dag_run = run_dag(dag)

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert emulator.state.snapshot("calls") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, {}),
        ({"a": 1}, {"a": 1}),
        ('{"订单号": "SO-1", "数量": 10}', {"订单号": "SO-1", "数量": 10}),
        ("{'订单号': 'SO-1', '数量': 10, '加急': True}", {"订单号": "SO-1", "数量": 10, "加急": True}),
    ],
)
def test_rendered_app_params_reads_mappings(value, expected):
    assert rendered_app_params(value) == expected


@pytest.mark.parametrize("value", ["run-1", "[1, 2]", "10", ["a"], 10])
def test_rendered_app_params_refuses_what_is_not_a_mapping(value):
    with pytest.raises(OctoRpaInvalidParamsError, match="mapping"):
        rendered_app_params(value)


def test_bot_id_is_templated(emulator, order_conn):
    from airflow.providers.common.compat.sdk import task

    with _dag("op_bot_template") as dag:

        @task
        def pick_robot() -> str:
            return "robot-finance-01"

        pick_robot() >> OctoRpaTriggerOperator(
            task_id="trigger", app_params={"订单号": "SO-1"}, bot_id="{{ ti.xcom_pull(task_ids='pick_robot') }}"
        )
    run_dag(dag)

    assert _only_run(emulator)["robot"] == "robot-finance-01"
    assert emulator.state.snapshot("calls")[0]["specified_bot"] == "robot-finance-01"


def test_mapped_over_orders_each_starts_one_run_in_the_pool(emulator, order_conn):
    from airflow.providers.common.compat.sdk import task

    with _dag("op_mapped") as dag:

        @task
        def orders() -> list[dict]:
            return [{"订单号": f"SO-{i}", "数量": i} for i in range(3)]

        mapped = OctoRpaTriggerOperator.partial(task_id="trigger").expand(app_params=orders())
    dag_run = run_dag(dag)

    assert mapped.pool == "octorpa"
    runs = emulator.state.snapshot("runs")
    assert sorted(r["params"]["订单号"] for r in runs) == ["SO-0", "SO-1", "SO-2"]
    values = xcom_return_values(dag_run, "trigger")
    assert sorted(values) == [0, 1, 2]
    assert {v["flow_process_no"] for v in values.values()} == {r["flow_process_no"] for r in runs}


def test_pool_can_be_overridden_and_templated_fields_are_declared():
    op = OctoRpaTriggerOperator(task_id="t", pool="other_pool")
    assert op.pool == "other_pool"
    assert tuple(OctoRpaTriggerOperator.template_fields) == ("app_params", "bot_id")
    assert OctoRpaTriggerOperator.partial(task_id="m", pool="p2").expand(app_params=[{}]).pool == "p2"


def test_default_args_pool_wins_over_the_operator_default_mapped_or_not():
    from airflow.providers.common.compat.sdk import TaskGroup

    with _dag("op_default_args_pool", default_args={"pool": "team_pool"}):
        op = OctoRpaTriggerOperator(task_id="t")
        mapped = OctoRpaTriggerOperator.partial(task_id="m").expand(app_params=[{}])
        with TaskGroup("g", default_args={"pool": "group_pool"}):
            in_group = OctoRpaTriggerOperator.partial(task_id="m").expand(app_params=[{}])
        own = OctoRpaTriggerOperator.partial(task_id="o", default_args={"pool": "own_pool"}).expand(app_params=[{}])
    assert (op.pool, mapped.pool, in_group.pool, own.pool) == ("team_pool", "team_pool", "group_pool", "own_pool")
    with _dag("op_no_default_args_pool"):
        assert OctoRpaTriggerOperator.partial(task_id="m").expand(app_params=[{}]).pool == "octorpa"


def test_unsigned_connection_warns_that_the_url_is_the_only_credential(emulator, monkeypatch, capfd):
    from airflow_octorpa.emulator import WebhookSpec
    from tests.support.settings import FAST_LIMITS, connection_json

    emulator.state.put_webhook(
        WebhookSpec.from_dict({"id": "open-hook", "robot": "robot-warehouse-01", "app": {"inputs": {"x": 0}}})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url("open-hook"), None, rate_limits=FAST_LIMITS),
    )
    OctoRpaTriggerOperator(task_id="t", app_params={"x": 1}).execute({})
    out = capfd.readouterr().out
    assert out.count("has no signing secret") == 1 and "Turn on the trigger's signature check" in out


def test_failed_call_fails_the_task(emulator, monkeypatch):
    from tests.support.settings import FAST_LIMITS, ORDER_WEBHOOK, connection_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_BAD",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), "wrong-secret", rate_limits=FAST_LIMITS),
    )
    with _dag("op_bad_secret") as dag:
        OctoRpaTriggerOperator(task_id="trigger", octorpa_conn_id="octorpa_bad", app_params={"订单号": "SO-1"})
    dag_run = run_dag(dag)

    assert task_states(dag_run)[("trigger", -1)] == "failed"
    assert [c["code"] for c in emulator.state.snapshot("calls")] == ["SignatureVerificationFailureOrTimestampExpired"]
    assert emulator.state.snapshot("runs") == []


def test_a_pool_that_does_not_exist_is_named_in_the_task_log(emulator, order_conn, capfd, caplog):
    """``airflow dags test`` ignores pools: the task runs there, and a scheduler would never run it."""
    with _dag("op_missing_pool") as dag:
        OctoRpaTriggerOperator(task_id="nowhere", app_params={"订单号": "SO-9"}, pool="no_such_pool")
        OctoRpaTriggerOperator(task_id="pooled", app_params={"订单号": "SO-10"})
    dag_run = run_dag(dag)
    out = "".join(capfd.readouterr()) + caplog.text
    assert task_states(dag_run) == {("nowhere", -1): "success", ("pooled", -1): "success"}
    # Captured output may hold a log line twice (stdout and caplog): what counts is which pool is named.
    assert "The pool 'no_such_pool' does not exist. Under a scheduler this task waits in 'scheduled'" in out
    assert "The pool 'octorpa' does not exist" not in out and "airflow pools import" in out
