"""The provider's Variables of a DAG run: found by exact keys, removed when the run ends, swept
when no one removed them.

Each trigger task instance keeps at most four Variables: its call record and probe (Airflow before
3.3) and its run report and end claim. Their keys are derived from the task instance, so the end of
a DAG run deletes them by key, from the run's task instances, and never reads another run's.
Where no listener runs at a run's end (Airflow 2.11 marking a run from the UI or the API, a deleted
run or DAG, ``airflow db clean``, a scheduler without the provider), :func:`sweep` removes what is
left: records whose DAG run is gone, or ended more than ``[octorpa] record_retention`` seconds ago.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_octorpa.storage import (
    REPORT_PREFIX,
    VARIABLE_PREFIX,
    chunks,
    json_object,
    value_or_none,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION_SECONDS = 86400.0
DEFAULT_SWEEP_INTERVAL_SECONDS = 3600.0
_ENDED = ("success", "failed")


@dataclass(frozen=True)
class SweepResult:
    removed: int
    kept: int
    unreadable: int

    def __str__(self) -> str:
        return f"removed {self.removed}, kept {self.kept} of runs still running or ended recently, {self.unreadable} unreadable"


def sweep(session: Any, retention_seconds: float | None = None, now: float | None = None) -> SweepResult:
    """Remove the provider's Variables whose DAG run no longer exists or ended ``retention_seconds``
    ago or more. Reads every one of them: run it now and then, not on a hot path."""
    from airflow.models.dagrun import DagRun
    from airflow.models.variable import Variable
    from sqlalchemy import delete, or_, select

    retention = record_retention() if retention_seconds is None else retention_seconds
    cutoff = (time.time() if now is None else now) - retention
    rows = session.scalars(
        select(Variable).where(
            or_(
                Variable.key.startswith(VARIABLE_PREFIX, autoescape=True),
                Variable.key.startswith(REPORT_PREFIX, autoescape=True),
            )
        )
    )
    by_run: dict[tuple[str, str], list[str]] = {}
    unreadable = 0
    for row in rows:
        stored = json_object(value_or_none(row))
        if stored is None or not stored.get("dag_id") or not stored.get("run_id"):
            unreadable += 1
            continue
        by_run.setdefault((str(stored["dag_id"]), str(stored["run_id"])), []).append(row.key)
    doomed: list[str] = []
    kept = 0
    for dag_id in {dag_id for dag_id, _ in by_run}:
        run_ids = [run_id for d, run_id in by_run if d == dag_id]
        runs = {
            run_id: (state, end_date)
            for run_id, state, end_date in session.execute(
                select(DagRun.run_id, DagRun.state, DagRun.end_date).where(
                    DagRun.dag_id == dag_id, DagRun.run_id.in_(run_ids)
                )
            )
        }
        for run_id in run_ids:
            keys = by_run[(dag_id, run_id)]
            state, end_date = runs.get(run_id, (None, None))
            gone = run_id not in runs
            ended_long_ago = str(state) in _ENDED and end_date is not None and end_date.timestamp() <= cutoff
            if gone or ended_long_ago:
                doomed += keys
            else:
                kept += len(keys)
    table = Variable.__table__
    removed = sum(
        session.execute(delete(table).where(table.c.key.in_(chunk))).rowcount or 0 for chunk in chunks(doomed)
    )
    return SweepResult(removed, kept, unreadable)


def record_retention() -> float:
    from airflow.providers.common.compat.sdk import conf

    return conf.getfloat("octorpa", "record_retention", fallback=DEFAULT_RETENTION_SECONDS)


_last_sweep: float | None = None
_sweep_lock = threading.Lock()


def sweep_soon() -> bool:
    """Sweep in a background thread of this process, at most once per ``[octorpa] sweep_interval``
    seconds (0: never); whether a sweep started. Its own session: a failure touches no caller's."""
    from airflow.providers.common.compat.sdk import conf

    global _last_sweep
    interval = conf.getfloat("octorpa", "sweep_interval", fallback=DEFAULT_SWEEP_INTERVAL_SECONDS)
    if interval <= 0:
        return False
    with _sweep_lock:
        if _last_sweep is not None and time.monotonic() - _last_sweep < interval:
            return False
        _last_sweep = time.monotonic()
    threading.Thread(target=_sweep_in_own_session, name="octorpa-sweep", daemon=True).start()
    return True


def _sweep_in_own_session() -> None:
    from airflow.utils.session import create_session

    try:
        with create_session() as session:
            result = sweep(session)
        if result.removed:
            log.info("Swept the Octopus RPA provider's records of ended runs: %s.", result)
    except Exception:  # noqa: BLE001 - the next sweep tries again; nothing depends on this one
        log.warning("Could not sweep the Octopus RPA provider's records of ended runs.", exc_info=True)
