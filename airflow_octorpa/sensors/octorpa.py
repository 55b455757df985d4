"""Sensor that waits for an RPA run's own report of its end (the app's last step calls back)."""

from __future__ import annotations

import ast
import datetime
import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowFailException,
    AirflowSensorTimeout,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_octorpa.callbacks.reports import FAILED, SUCCEEDED, WAITING
from airflow_octorpa.rate_limit import DEFAULT_POOL
from airflow_octorpa.triggers.report import DEFAULT_POLL_INTERVAL

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

_GENERAL_POOL = "default_pool"


class OctoRpaRunSensor(BaseSensorOperator):
    """
    Wait for the report of the run an upstream :class:`OctoRpaTriggerOperator` (``callback=True``) started.

    Returns (XCom) ``{"flow_process_no", "status", "outputs", "message", "reported_at"}`` when the
    app reports ``succeeded``; its outlets' asset events carry the same in their ``extra``. A
    ``failed`` report fails the task at once, with the app's message (retries cannot change a
    reported failure). No report within ``timeout`` fails it naming the ``flowProcessNo`` to look up
    in the Octopus RPA console. A report that arrived before the wait began is found at once.

    It never runs in the rate-limit pool (a run may last hours): its pool is ``default_pool`` unless
    you name another.

    :param run: The trigger task's XCom (``trigger.output``; templated): the started run and its
        ``report_key``. For mapped trigger tasks, map the sensor over ``trigger.output`` too.
    :param deferrable: Wait in the triggerer (default True: a waiting task holds no worker);
        otherwise ``mode="reschedule"`` frees the worker between pokes.
    :param poll_interval: Seconds between reads of the report (default 5, as Airflow's own waiting
        triggers).
    """

    template_fields: Sequence[str] = ("run",)
    ui_color = "#ffe0b2"

    def __init__(
        self,
        *,
        run: Any,
        deferrable: bool = True,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("pool") in (None, DEFAULT_POOL):
            kwargs["pool"] = _GENERAL_POOL  # a wait holds no rate-limit slot, whatever default_args say
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.run = run
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    def execute(self, context: Context) -> Any:
        key, flow = self._key_and_flow()
        if not self.deferrable:
            try:
                return super().execute(context)
            except AirflowSensorTimeout:
                self._forget(key)
                raise AirflowSensorTimeout(self._timeout_message(flow)) from None
        from airflow_octorpa.callbacks.reports import read

        stored = read(key)  # a report may already be there
        if stored is not None and stored.get("status") != WAITING:
            return self._finish(stored, flow, key, context)
        from airflow_octorpa.triggers.report import OctoRpaReportTrigger

        timeout_at = time.time() + float(self.timeout) if self.timeout is not None else None
        self.log.info("Waiting for Octopus RPA run flowProcessNo=%s to report its end (deferred).", flow)
        self.defer(
            trigger=OctoRpaReportTrigger(key, timeout_at=timeout_at, poll_interval=self.poll_interval),
            method_name="execute_complete",
            # Airflow's own deadline only as a backstop: the trigger's timeout says more.
            timeout=datetime.timedelta(seconds=float(self.timeout) + 60) if self.timeout is not None else None,
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        key, flow = self._key_and_flow()
        status = (event or {}).get("status")
        if status == "timeout":
            self._forget(key)
            raise AirflowSensorTimeout(self._timeout_message(flow))
        if status == "missing":
            raise self._missing(flow)
        return self._finish((event or {}).get("report") or {}, flow, key, context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_octorpa.callbacks.reports import read

        key, flow = self._key_and_flow()
        stored = read(key)
        if stored is None:
            # Airflow answers "not found" for a read that failed too: poke again; the timeout ends it.
            self.log.warning("The report record of flowProcessNo=%s cannot be read now; poking again.", flow)
            return False
        if stored.get("status") == WAITING:
            return False
        return PokeReturnValue(True, self._finish(stored, flow, key, context))

    def _finish(self, stored: dict[str, Any], flow: str, key: str, context: Context) -> dict[str, Any]:
        status = stored.get("status")
        message = stored.get("message") or ""
        if status == FAILED:
            self._forget(key)
            raise AirflowFailException(
                f"Octopus RPA run flowProcessNo={flow} reported that it failed: {message or '(no message)'}. "
                "Look the run up in the Octopus RPA console; clearing the trigger task starts the app again."
            )
        if status != SUCCEEDED:
            raise AirflowFailException(
                f"Octopus RPA run flowProcessNo={flow} has an unreadable report ({status!r:.40})."
            )
        result = {
            "flow_process_no": flow,
            "status": status,
            "outputs": stored.get("outputs") or {},
            "message": message,
            "reported_at": stored.get("reported_at"),
        }
        self.log.info("Octopus RPA run flowProcessNo=%s succeeded (%d output(s)).", flow, len(result["outputs"]))
        outlet_events = context.get("outlet_events")
        for outlet in getattr(self, "outlets", None) or []:
            if outlet_events is not None:
                outlet_events[outlet].extra.update(result)
        return result

    def _key_and_flow(self) -> tuple[str, str]:
        run = _mapping(self.run)
        key, flow = run.get("report_key"), run.get("flow_process_no")
        if not key or not flow:
            raise AirflowFailException(
                f"run names no reported call ({run!r:.200}): give the XCom of an OctoRpaTriggerOperator with "
                "callback=True (trigger.output)."
            )
        return str(key), str(flow)

    def _missing(self, flow: str) -> AirflowFailException:
        return AirflowFailException(
            f"No call awaits a report for Octopus RPA run flowProcessNo={flow}: its record is gone (an earlier "
            "wait failed or timed out, or its DAG run ended). Clear the trigger task to start the app again."
        )

    def _timeout_message(self, flow: str) -> str:
        return (
            f"Octopus RPA run flowProcessNo={flow} did not report its end within {float(self.timeout or 0):g} s. Look it up "
            "in the Octopus RPA console: it may still be running, or its last step (the callback) may have "
            "failed. Reports for it are no longer accepted."
        )

    def _forget(self, key: str) -> None:
        from airflow_octorpa.callbacks.reports import remove

        try:
            remove(key)
        except Exception as err:  # noqa: BLE001 - the listener removes it when the DAG run ends
            self.log.warning("Could not remove the run's report record (%s).", type(err).__name__)


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = {}
    return dict(value) if isinstance(value, Mapping) else {}


def start_and_wait(
    task_id: str, *, wait_kwargs: Mapping[str, Any] | None = None, **trigger_kwargs: Any
) -> tuple[Any, OctoRpaRunSensor]:
    """Start an app with ``callback=True`` and wait for its report, in one line of a DAG.

    ``start, wait = start_and_wait("process_order", app_params={...})`` makes the trigger task
    ``process_order`` and the sensor ``process_order_wait`` (``wait_kwargs`` are its arguments:
    ``timeout``, ``deferrable``, ``poll_interval``, ``outlets``...); ``wait.output`` is the report.
    """
    from airflow_octorpa.operators.octorpa import OctoRpaTriggerOperator

    start = OctoRpaTriggerOperator(task_id=task_id, callback=True, **trigger_kwargs)
    wait = OctoRpaRunSensor(task_id=f"{task_id}_wait", run=start.output, **dict(wait_kwargs or {}))
    return start, wait
