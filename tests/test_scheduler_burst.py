"""Through a real scheduler: a burst of mapped triggers from two DAGs at once stays inside the limits."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from airflow_cluster import AirflowCluster
from conftest import ORDER_SECRET, ORDER_WEBHOOK

from airflow_octorpa.emulator import OctoRpaEmulator, default_config

# The vendor's windows scaled down (a minute becomes 12 s) in both the emulator and the
# connection, so the slot hold is max(1 / 1, 12 / 4) = 3 s instead of 15 s.
SCALED_LIMITS = "5/second;20/12 seconds"
N_PER_DAG = 24


@pytest.fixture(scope="module")
def scaled_emulator():
    config = default_config()
    config.rate_limits = SCALED_LIMITS
    with OctoRpaEmulator(config) as emulator:
        yield emulator


@pytest.mark.timeout(600)
def test_burst_from_two_dags_is_delivered_once_each_and_never_refused(scaled_emulator):
    home = Path(tempfile.mkdtemp(prefix="octorpa-cluster-"))
    cluster = AirflowCluster(home, Path(__file__).parent / "dags")
    cluster.prepare(
        {
            "octorpa_default": {
                "conn_type": "octorpa",
                "host": scaled_emulator.webhook_url(ORDER_WEBHOOK),
                "password": ORDER_SECRET,
                "extra": {"rate_limits": SCALED_LIMITS},
            }
        }
    )
    with cluster:
        cluster.start()
        cluster.wait_for_dags("octorpa_burst_worker", "octorpa_burst_deferred")
        started = time.monotonic()
        for mode in ("worker", "deferred"):
            cluster.trigger(f"octorpa_burst_{mode}", "burst", {"n": N_PER_DAG, "tag": mode})
        states = {mode: cluster.wait_for_run(f"octorpa_burst_{mode}", "burst", timeout=420) for mode in ("worker", "deferred")}
        took = time.monotonic() - started
        assert states == {"worker": "success", "deferred": "success"}, cluster.log_tail()
        xcoms = {mode: cluster.xcom_values(f"octorpa_burst_{mode}", "burst", "trigger") for mode in ("worker", "deferred")}

    calls = scaled_emulator.state.snapshot("calls")
    runs = scaled_emulator.state.snapshot("runs")
    orders = [r["params"]["订单号"] for r in runs]
    expected = {f"{mode}-{i:03d}" for mode in ("worker", "deferred") for i in range(N_PER_DAG)}
    assert [c for c in calls if c["status"] != 200] == []  # none refused
    assert len(orders) == len(set(orders)) == 2 * N_PER_DAG  # none arrived twice
    assert set(orders) == expected  # every trigger started a run
    for mode in ("worker", "deferred"):  # each task's XCom names its own run
        assert sorted(xcoms[mode]) == list(range(N_PER_DAG))
    by_number = {r["flow_process_no"]: r["params"]["订单号"] for r in runs}
    for mode in ("worker", "deferred"):
        for index, value in xcoms[mode].items():
            assert by_number[value["flow_process_no"]] == f"{mode}-{index:03d}"
    # No moving window ever held more than the limits (the emulator refused none, and this says why).
    arrivals = sorted(c["received_at"] for c in calls)
    for period, amount in ((1.0, 5), (12.0, 20)):
        assert max(sum(1 for t in arrivals if s <= t < s + period) for s in arrivals) <= amount
    print(f"{2 * N_PER_DAG} triggers through the scheduler in {took:.1f} s")
