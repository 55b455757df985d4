"""The slot hold and the safe resends, against the emulator enforcing its limits as moving windows."""

from __future__ import annotations

import datetime

import pytest

from airflow_octorpa.exceptions import (
    CallOutcome,
    OctoRpaTransportError,
    OctoRpaWebhookError,
)
from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator
from airflow_octorpa.rate_limit import hold_seconds
from tests.support.airflow_cluster import free_port
from tests.support.airflow_helpers import AIRFLOW_V_3, run_dag, task_states, xcom_return_values
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK, airflow_cli, connection_json, publish_pools

START = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("limits", "slots", "hold"),
    [
        ("5/second;20/minute", 5, 15.0),  # the vendor's limits: 5 x 60 / 20
        ("5/second", 5, 1.0),
        ("5/second;20/minute", 1, 3.0),
        ("5/second;20/minute", 3, 10.0),  # 20 // 3 = 6 calls a minute per slot
        ("5/second;7/10 seconds", 5, 10.0),  # 7 // 5 = 1 call per 10 s per slot, not 10 x 5 / 7
        ("5/second;20/28 seconds", 5, 7.0),  # the scaled-down windows of the scheduler tests
        ("20/minute;5/second", 5, 15.0),
    ],
)
def test_hold_follows_the_limits_and_the_pool(limits, slots, hold):
    assert hold_seconds(limits, slots) == pytest.approx(hold)


@pytest.mark.parametrize(("limits", "slots"), [("5/second;20/minute", 10), ("3/second", 4)])
def test_pool_larger_than_a_limit_is_refused(limits, slots):
    with pytest.raises(ValueError, match="at most"):
        hold_seconds(limits, slots)


def test_hold_keeps_every_window_within_its_limit():
    """Simulate a pool whose slots send as soon as allowed; count sends in every window.

    Exact fractions: a send exactly one period after another is outside its window, which
    float rounding would blur.
    """
    from fractions import Fraction

    from limits import parse_many

    cases = [("5/second;20/minute", 5), ("3/second;7/10 seconds", 3), ("5/second;7/10 seconds", 5), ("9/second", 4)]
    for limits, slots in cases:
        hold = Fraction(hold_seconds(limits, slots)).limit_denominator(1000)
        sends = sorted(Fraction(i, 100) + k * hold for i in range(slots) for k in range(40))
        for item in parse_many(limits):
            period = item.get_expiry()
            worst = max(sum(1 for t in sends if start <= t < start + period) for start in sends)
            assert worst <= item.amount, (limits, slots, item)


def test_outcomes_are_classified_in_one_place():
    def webhook_error(status, code=None):
        return OctoRpaWebhookError(status=status, code=code, description=None, request_id=None, conn_id="c")

    assert webhook_error(429).safe_to_resend and webhook_error(429).outcome is CallOutcome.NOT_STARTED
    assert webhook_error(400, "RateLimitExceeded").safe_to_resend
    assert not webhook_error(400, "SignatureVerificationFailureOrTimestampExpired").safe_to_resend
    assert webhook_error(503).outcome is CallOutcome.UNKNOWN and not webhook_error(503).safe_to_resend
    assert OctoRpaTransportError("x", request_sent=False).safe_to_resend
    sent = OctoRpaTransportError("x", request_sent=True)
    assert sent.outcome is CallOutcome.UNKNOWN and not sent.safe_to_resend


@pytest.mark.usefixtures("airflow_db")
def test_rate_limited_call_is_resent_after_retry_after_and_starts_once(emulator, monkeypatch):
    # The service allows 1 call per 6 s (the second task's call comes well within them, however slow
    # the machine); the connection believes in more, so the second task is refused once and must
    # wait for the window before its one run starts.
    emulator.state.configure(rate_limits="1/6 seconds")
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="100/second"),
    )
    try:
        from airflow.providers.common.compat.sdk import DAG

        with DAG("rl_resend", schedule=None, start_date=START) as dag:
            first = OctoRpaTriggerOperator(task_id="first", app_params={"订单号": "A"})
            second = OctoRpaTriggerOperator(task_id="second", app_params={"订单号": "B"})
            first >> second
        dag_run = run_dag(dag)
    finally:
        emulator.state.configure(rate_limits="5/second;20/minute")

    calls = emulator.state.snapshot("calls")
    assert [(c["params"]["订单号"], c["status"]) for c in calls] == [("A", 200), ("B", 429), ("B", 200)]
    assert calls[2]["received_at"] - calls[1]["received_at"] >= 1.0  # waited for Retry-After
    assert sorted(r["params"]["订单号"] for r in emulator.state.snapshot("runs")) == ["A", "B"]
    assert set(task_states(dag_run).values()) == {"success"}


def test_refused_connection_is_resent_then_fails_without_starting(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/api/v1/bots/webhooks/x/invoke"
    monkeypatch.setenv("AIRFLOW_CONN_OCTORPA_DEFAULT", connection_json(url, "secret-x", rate_limits="100/second"))
    op = OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, rate_limit_retries=2)
    attempts = []
    original = op.hook.send
    monkeypatch.setattr(op.hook, "send", lambda call: attempts.append(call) or original(call))
    with pytest.raises(OctoRpaTransportError) as caught:
        op.execute({})
    assert caught.value.request_sent is False
    assert len(attempts) == 3


def test_refused_signature_is_not_resent(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), "wrong-secret", rate_limits="100/second"),
    )
    with pytest.raises(OctoRpaWebhookError):
        OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}).execute({})
    assert len(emulator.state.snapshot("calls")) == 1


def test_worker_mode_keeps_the_slot_for_the_hold(emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="5/2 seconds", pool_size=1),
    )
    import time

    op = OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, deferrable=False)
    op.execute({})
    (call,) = emulator.state.snapshot("calls")
    # One slot, 5 calls per 2 s: the slot is kept 0.4 s after the answer (a lower bound only).
    assert time.time() - call["received_at"] >= 0.4


@pytest.mark.usefixtures("airflow_db")
def test_deferrable_mode_gives_the_same_result_as_worker_mode(emulator, monkeypatch):
    # pool_size=1 and 1 call per 8 s: an 8 s hold, long enough to be deferred.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="1/8 seconds", pool_size=1),
    )
    from airflow.providers.common.compat.sdk import DAG

    with DAG("rl_deferrable", schedule=None, start_date=START) as dag:
        OctoRpaTriggerOperator(task_id="deferred", app_params={"订单号": "D"}, deferrable=True)
        OctoRpaTriggerOperator(task_id="worker", app_params={"订单号": "W"}, deferrable=False)
    dag_run = run_dag(dag)

    runs = {r["params"]["订单号"]: r for r in emulator.state.snapshot("runs")}
    assert set(task_states(dag_run).values()) == {"success"}
    for task_id, order in (("deferred", "D"), ("worker", "W")):
        assert xcom_return_values(dag_run, task_id)[-1] == {
            "flow_process_no": runs[order]["flow_process_no"],
            "flow_id": "flow-order-processing",
            "enterprise_id": emulator.state.config.enterprise_id,
        }
    assert len(emulator.state.snapshot("calls")) == 2


@pytest.mark.usefixtures("airflow_db")
def test_with_an_execution_timeout_airflow_2_keeps_the_hold_in_the_worker(emulator, monkeypatch, capfd):
    """Airflow 2 counts a deferred task's time against execution_timeout (the trigger's timeout is
    start_date + execution_timeout), so a deferred hold could be cancelled before it ends; Airflow 3
    does not, so there the hold is deferred."""
    # A 1 s call timeout and a 10 s hold: the least execution_timeout is 1 + 10 + 5 s where the
    # hold stays in the worker, 1 + 6 + 5 s where it is deferred.
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="1/10 seconds", pool_size=1, timeout=1
        ),
    )
    from airflow.providers.common.compat.sdk import DAG

    least = 12 if AIRFLOW_V_3 else 16
    with DAG("rl_deferrable_with_timeout", schedule=None, start_date=START) as dag:
        for task_id, seconds in (("t", 16), ("short", least - 1)):
            OctoRpaTriggerOperator(
                task_id=task_id,
                app_params={"订单号": task_id},
                deferrable=True,
                execution_timeout=datetime.timedelta(seconds=seconds),
            )
    dag_run = run_dag(dag)

    out = capfd.readouterr().out
    assert task_states(dag_run) == {("t", -1): "success", ("short", -1): "failed"}
    assert f"execution_timeout=0:00:{least - 1} cannot fit" in out and f"Give at least {least} s" in out
    assert len(emulator.state.snapshot("runs")) == 1
    assert ("Keeping the slot hold in the worker although deferrable=True" in out) is not AIRFLOW_V_3
    assert ("(deferred)" in out) is AIRFLOW_V_3
    assert len(emulator.state.snapshot("calls")) == 1  # the refused task sent nothing


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.parametrize("pool", ["octorpa_uncounted", "octorpa_unknown"])
def test_a_deferrable_task_defers_only_into_a_pool_that_counts_deferred_tasks(emulator, monkeypatch, capfd, pool):
    if pool == "octorpa_uncounted":  # as `airflow pools set` and the UI's checkbox make it
        done = airflow_cli("pools", "set", pool, "1", "no deferred")
        assert done.returncode == 0, done.stderr
        publish_pools()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="1/8 seconds", pool_size=1, pool=pool
        ),
    )
    from airflow.providers.common.compat.sdk import DAG

    with DAG(f"rl_{pool}", schedule=None, start_date=START) as dag:
        OctoRpaTriggerOperator(task_id="t", app_params={"订单号": "P"}, deferrable=True, pool=pool)
    if pool == "octorpa_unknown":
        assert airflow_cli("pools", "set", pool, "1", "unknown to the workers", "--include-deferred").returncode == 0
    dag_run = run_dag(dag)

    out = capfd.readouterr().out
    assert task_states(dag_run)[("t", -1)] == "success"
    if pool == "octorpa_uncounted":
        assert f"the pool {pool!r} does not count deferred tasks" in out and "(deferred)" not in out
    elif AIRFLOW_V_3:  # created after the scheduler last published the pools: the worker cannot tell
        assert f"whether the pool {pool!r} counts deferred tasks cannot be told here" in out
        assert "(deferred)" not in out
    else:  # Airflow 2's worker reads the pool itself
        assert "(deferred)" in out


@pytest.mark.usefixtures("airflow_db")
def test_a_rate_limit_refusal_names_the_limit_and_the_likely_causes(emulator, monkeypatch, capfd):
    """The pool has 3 slots but the connection computes its hold for 1: the log says so."""
    assert (
        airflow_cli("pools", "set", "octorpa_big", "3", "bigger than pool_size", "--include-deferred").returncode == 0
    )
    publish_pools()
    monkeypatch.setenv(
        "AIRFLOW_CONN_OCTORPA_DEFAULT",
        connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="100/second", pool_size=1, pool="octorpa_big"
        ),
    )
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "rate_limit", "count": 1}])
    from airflow.providers.common.compat.sdk import DAG

    with DAG("rl_refusal_causes", schedule=None, start_date=START) as dag:
        OctoRpaTriggerOperator(task_id="t", app_params={"订单号": "R"}, pool="octorpa_big")
    dag_run = run_dag(dag)

    out = capfd.readouterr().out
    assert task_states(dag_run)[("t", -1)] == "success"
    assert "refused for the account's rate limit: HTTP 429" in out
    assert "the pool 'octorpa_big' has 3 slots but the connection's pool_size is 1" in out
    assert "another system or Airflow deployment" in out


def test_task_outside_the_pool_says_so(emulator, order_conn, capfd):
    OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}, pool="default_pool").execute({})
    assert "runs in the pool 'default_pool', not 'octorpa'" in capfd.readouterr().out
    OctoRpaTriggerOperator(task_id="t", app_params={"a": 1}).execute({})
    assert "runs in the pool" not in capfd.readouterr().out
