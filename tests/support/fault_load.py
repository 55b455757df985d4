"""A burst of triggers through a real scheduler while the emulator injects faults at random, and
the account of every trigger afterwards: started once, failed as "may have started", or lost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DAG_ID = "octorpa_burst_worker"
UNKNOWN_OUTCOME_TEXT = "MAY HAVE STARTED"


@dataclass
class FaultLoadSummary:
    n: int
    started: int  # tasks that hold the flowProcessNo of a run the emulator started for them
    unknown: int  # tasks that failed saying the app may have started
    duplicates: int  # runs beyond the first for one trigger
    lost: int  # triggers accounted for neither way
    runs_of_unknown: int  # of the unknown ones, how many had in fact started a run
    faults: dict[str, int]

    def line(self) -> str:
        return (
            f"faults: N={self.n} started={self.started} unknown={self.unknown} duplicates={self.duplicates} "
            f"lost={self.lost} (unknown that had started: {self.runs_of_unknown}; injected: {self.faults})"
        )


def run_fault_load(
    cluster: Any, emulator: Any, n: int, run_id: str, seed: int = 7, timeout: float = 900
) -> FaultLoadSummary:
    """Trigger ``n`` orders with about 10% 429s, 5% unknown outcomes and 5% 503s before starting."""
    emulator.state.reset()
    emulator.state.faults.set_random(
        {"seed": seed, "rate_limit": 0.10, "unknown": 0.05, "status_before_start": 0.05, "delay": 5}
    )
    try:
        cluster.wait_for_dags(DAG_ID)
        tag = f"load-{run_id}"
        cluster.trigger(DAG_ID, run_id, {"n": n, "tag": tag})
        cluster.wait_for_run(DAG_ID, run_id, timeout=timeout)
    finally:
        emulator.state.faults.set_random(None)
    return account(cluster, emulator, n, run_id, tag)


def account(cluster: Any, emulator: Any, n: int, run_id: str, tag: str, dag_id: str = DAG_ID) -> FaultLoadSummary:
    """Each of the ``n`` triggers of ``dag_id``/``run_id`` (orders ``<tag>-000``...): started once
    with its run in XCom, failed saying the app may have started, or lost."""
    runs_by_order: dict[str, list[str]] = {}
    for run in emulator.state.snapshot("runs"):
        if str(run["params"].get("订单号", "")).startswith(f"{tag}-"):
            runs_by_order.setdefault(run["params"]["订单号"], []).append(run["flow_process_no"])
    states = cluster.task_states(dag_id, run_id)
    xcoms = cluster.xcom_values(dag_id, run_id, "trigger")
    started = unknown = lost = runs_of_unknown = 0
    for index in range(n):
        runs = runs_by_order.get(f"{tag}-{index:03d}", [])
        state = states.get(("trigger", index))
        if state == "success" and xcoms.get(index, {}).get("flow_process_no") in runs:
            started += 1
        elif state == "failed" and UNKNOWN_OUTCOME_TEXT in _task_log(cluster, dag_id, run_id, index):
            unknown += 1
            runs_of_unknown += bool(runs)
        else:
            lost += 1
    faults: dict[str, int] = {}
    for call in emulator.state.snapshot("calls"):
        if call.get("fault") and str((call.get("params") or {}).get("订单号", "")).startswith(f"{tag}-"):
            faults[call["fault"]] = faults.get(call["fault"], 0) + 1
    duplicates = sum(len(runs) - 1 for runs in runs_by_order.values() if len(runs) > 1)
    return FaultLoadSummary(n, started, unknown, duplicates, lost, runs_of_unknown, faults)


def _task_log(cluster: Any, dag_id: str, run_id: str, map_index: int) -> str:
    folder = (
        cluster.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / "task_id=trigger" / f"map_index={map_index}"
    )
    return "".join(p.read_text(errors="replace") for p in folder.glob("*.log"))
