"""The slot hold: how long a call keeps its pool slot after its exchange, and where it is kept."""

from __future__ import annotations

import time
from typing import Any

from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from airflow_octorpa import metrics

# Shorter holds are kept in the worker even when deferrable. Deferring costs slot time (the resume,
# and the triggerer's hand-off when it is on another host), and on Airflow 3.3 a trigger that fires
# within seconds of the deferral can race the executor's late report of the deferral's exit (it
# comes up to ~5 s after), which makes the scheduler fail the resumed task as "state changed
# externally". A triggerer on the worker's host fires the remaining hold after the deferral, with
# no hand-off added: 6 s still leaves that report a second.
MIN_DEFERRAL_SECONDS = 6.0


class SlotHold:
    """Keeps a pool slot ``hold`` seconds after the last exchange with the service ended: the pool's
    slots then cannot start more calls than the account's rate limits allow."""

    def __init__(self, hold: float, conn_id: str, log: Any, *, deferred: bool = False) -> None:
        self.hold = hold
        self.deferred = deferred  # long holds go to the triggerer (see where_to_hold)
        self._conn_id = conn_id
        self._log = log
        self._last_exchange_end: float | None = None  # time.monotonic()

    @property
    def in_worker_at_most(self) -> float:
        """The longest this hold keeps the slot in the worker after a call."""
        return min(self.hold, MIN_DEFERRAL_SECONDS) if self.deferred else self.hold

    def exchange_ended(self) -> None:
        self._last_exchange_end = time.monotonic()

    def deadline(self) -> float:
        """When the hold ends (``time.monotonic()``); now when no exchange was made."""
        if self._last_exchange_end is None:
            return time.monotonic()
        return self._last_exchange_end + self.hold

    def remaining(self) -> float:
        return max(0.0, self.deadline() - time.monotonic())

    def goes_to_triggerer(self) -> bool:
        """Whether the rest of the hold is kept deferred (too short a rest is kept here)."""
        return self.deferred and self.remaining() > MIN_DEFERRAL_SECONDS

    def seconds_before_resend(self, error: BaseException | None) -> float:
        """Wait out the hold and any Retry-After the service gave, whichever is later."""
        retry_after = getattr(error, "retry_after", None) or 0.0
        since_exchange = time.monotonic() - (self._last_exchange_end or time.monotonic())
        return max(self.remaining(), retry_after - since_exchange, 0.0)

    def wait_out(self) -> None:
        """Keep the slot here for the rest of the hold, all of it: an ``execution_timeout`` that fires
        meanwhile is raised once the hold is over."""
        if self._last_exchange_end is not None:
            metrics.slot_hold(self.remaining(), self._conn_id)
        if (remaining := self.remaining()) >= 0.1:
            self._log.info("Keeping the pool slot for %.1f s so the account's rate limits hold.", remaining)
        timeout: AirflowTaskTimeout | None = None
        while (remaining := self.remaining()) > 0:
            try:
                time.sleep(remaining)
            except AirflowTaskTimeout as fired:
                timeout = fired
        if timeout is not None:
            raise timeout


def where_to_hold(deferrable: bool, timeout_counts_deferral: bool, pool: str, counts: bool | None, log: Any) -> bool:
    """Whether long holds are deferred: only where the slot stays taken until the hold ends
    (``counts``: whether the pool counts deferred tasks, None when unknown); says why not otherwise.

    ``timeout_counts_deferral``: the task has an ``execution_timeout`` that also runs while it is
    deferred (Airflow 2), whose end would cancel the hold early."""
    if not deferrable:
        return False
    if timeout_counts_deferral:
        log.info(
            "Keeping the slot hold in the worker although deferrable=True: on Airflow 2 execution_timeout "
            "also counts the time a task is deferred, and its end would cancel the hold early. Remove "
            "execution_timeout to defer the hold."
        )
        return False
    if counts is not True:
        why = (
            f"the pool {pool!r} does not count deferred tasks, so a deferred hold would free its slot at once"
            if counts is False
            else f"whether the pool {pool!r} counts deferred tasks cannot be told here (on Airflow 3 "
            "the scheduler publishes it when a DAG run starts)"
        )
        log.warning(
            "Keeping the slot hold in the worker although deferrable=True: %s. Fix: airflow pools set %s "
            "<slots> 'Octopus RPA webhook calls' --include-deferred, then check with octorpa doctor.",
            why,
            pool,
        )
        return False
    return True
