"""Sensor that waits for an RPA run's own report of its end (the app's last step calls back)."""

from __future__ import annotations

import datetime
import json
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowProviderDeprecationWarning
from airflow.providers.common.compat.sdk import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
)

from airflow_octorpa.callbacks.reports import EXPIRED, FAILED, SUCCEEDED, WAITING, RecordUnreadable, ReportKey
from airflow_octorpa.callbacks.run_page import OctoRpaRunLink
from airflow_octorpa.operators.rendered import default_args_pool, rendered_mapping
from airflow_octorpa.rate_limit import DEFAULT_POOL
from airflow_octorpa.triggers.report import DEFAULT_POLL_INTERVAL

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

_GENERAL_POOL = "default_pool"
# Each poke in reschedule mode starts a worker process and writes a TaskReschedule row: Airflow's
# own sensors poke every 60 s.
DEFAULT_RESCHEDULE_INTERVAL = 60.0
PROGRESS_LOGGED_DESCRIPTION = (
    "airflow-provider-octorpa: the last progress report of an RPA run that its reschedule wait logged. "
    "Removed with its DAG run; do not edit."
)


class OctoRpaReportUnreadableError(AirflowException):
    """Whether the run's report is there could not be told; the task's retries read it again."""


class OctoRpaRunSensor(BaseSensorOperator):
    """
    Wait for the report of the run an upstream :class:`OctoRpaTriggerOperator` (``callback=True``) started.

    Returns (XCom) ``{"flow_process_no", "status", "outputs", "message", "reported_at"}`` when the
    app reports ``succeeded``; its outlets' asset events carry the same in their ``extra``. A
    ``failed`` report fails the task at once, with the app's message; no report within ``timeout``
    fails it naming the ``flowProcessNo``. With ``soft_fail=True`` both skip it instead, however
    the report was found. A wait never holds a slot of the rate-limit pool (see the docs).

    :param started_run: The trigger task's XCom (``trigger.output``; templated): the started run and
        its ``report_key``. For mapped trigger tasks, map the sensor over ``trigger.output`` too.
        (``run``, its earlier name, still works with a deprecation warning: on Airflow 2 it
        shadowed ``BaseOperator.run``.)
    :param deferrable: Wait in the triggerer (default True: a waiting task holds no worker);
        otherwise ``mode="reschedule"`` frees the worker between pokes.
    :param poll_interval: Seconds between reads of the report: default 5 deferred (one Variable read
        in the triggerer), 60 in reschedule mode (a worker start and a TaskReschedule row each).
    """

    template_fields: Sequence[str] = ("started_run",)
    ui_color = "#ffe0b2"
    operator_extra_links = (OctoRpaRunLink(),)

    def __init__(
        self,
        *,
        started_run: Any = None,
        deferrable: bool = True,
        poll_interval: float | None = None,
        run: Any = None,
        **kwargs: Any,
    ) -> None:
        started_run = _started_run(started_run, run)
        if kwargs.get("pool") in (None, DEFAULT_POOL):
            kwargs["pool"] = _GENERAL_POOL  # a wait holds no rate-limit slot, whatever default_args say
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
        if poll_interval is None:
            poll_interval = DEFAULT_POLL_INTERVAL if deferrable else DEFAULT_RESCHEDULE_INTERVAL
        kwargs.setdefault("poke_interval", poll_interval)
        super().__init__(**kwargs)
        self.started_run = started_run
        self.deferrable = deferrable
        self.poll_interval = poll_interval

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Map the sensor: the scheduler takes a mapped task's pool from here (``__init__`` runs only on
        the worker), so a pool named by ``default_args`` (the task's, its group's, its DAG's) as the
        rate-limit pool is replaced here too."""
        if (kwargs.get("pool") or default_args_pool(kwargs)) in (None, DEFAULT_POOL):
            kwargs["pool"] = _GENERAL_POOL
        return super().partial(**kwargs)

    def execute(self, context: Context) -> Any:
        key, flow = self._key_and_flow()
        if not self.deferrable:
            try:
                return super().execute(context)
            except (AirflowSensorTimeout, AirflowSkipException) as err:
                if not (isinstance(err, AirflowSensorTimeout) or isinstance(err.__cause__, AirflowSensorTimeout)):
                    raise
                return self._on_timeout(key, flow, context)
        stored = self._read(key)  # a report may already be there
        if stored is not None and stored.get("status") != WAITING:
            self._log_progress(stored, flow)
            return self._finish(stored, flow, context)
        from airflow_octorpa.triggers.report import OctoRpaReportTrigger

        timeout_at = time.time() + float(self.timeout) if self.timeout is not None else None
        self.log.info("Waiting for Octopus RPA run flowProcessNo=%s to report its end (deferred).", flow)
        self.defer(
            trigger=OctoRpaReportTrigger(
                str(key), timeout_at=timeout_at, poll_interval=self.poll_interval, flow_process_no=flow
            ),
            method_name="execute_complete",
            # Airflow's own deadline only as a backstop: the trigger's timeout says more.
            timeout=datetime.timedelta(seconds=float(self.timeout) + 60) if self.timeout is not None else None,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow's own defer timeout (the backstop) ends the wait as the trigger's timeout does: a
        report that landed first is used, and the wait is not retried with a fresh timeout."""
        if next_method == "__fail__" and "timeout" in str((next_kwargs or {}).get("error", "")).lower():
            next_method, next_kwargs = "execute_complete", {"event": {"status": "timeout"}}
        return super().resume_execution(next_method, next_kwargs, context)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        key, flow = self._key_and_flow()
        status = (event or {}).get("status")
        if status == "timeout":
            return self._on_timeout(key, flow, context)
        stored = self._read(key, confirm=context)  # the event names the outcome only: read the report
        if stored is None:
            raise self._ending(self._missing(flow))
        self._log_progress(stored, flow, after_seq=int((event or {}).get("progress_logged") or 0))
        if stored.get("status") == WAITING:
            # The triggerer could not find or read a record that this worker reads: not gone.
            raise self._ending(
                AirflowFailException(
                    f"The triggerer could not read the report record of Octopus RPA run flowProcessNo={flow} "
                    f"({status}), while this worker can: check that every Airflow component has the same "
                    "[core] fernet_key and reaches the metadata database (Airflow 3: the API server). The run may "
                    "still report: clear this wait task once fixed, not the trigger task (that starts the app again)."
                )
            )
        return self._finish(stored, flow, context)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        key, flow = self._key_and_flow()
        try:
            stored = self._read(key)
        except OctoRpaReportUnreadableError as err:
            self.log.warning("%s; poking again.", err)
            return False
        if stored is None:
            # Airflow answers "not found" for a read that failed too: poke again; the timeout ends it.
            self.log.warning("The report record of flowProcessNo=%s cannot be read now; poking again.", flow)
            return False
        self._log_new_progress(stored, key, flow, context)
        if stored.get("status") == WAITING:
            return False
        return PokeReturnValue(True, self._finish(stored, flow, context))

    def _log_new_progress(self, stored: dict[str, Any], key: ReportKey, flow: str, context: Context) -> None:
        """Log the progress reports that no earlier poke logged. Each poke is a new process in
        reschedule mode, and Airflow clears a task's XComs at each: the last one logged is kept
        beside the record (read only when the record holds progress)."""
        from airflow_octorpa.storage import LOGGED_SUFFIX, get_text, json_object

        if not stored.get("history"):
            return
        cursor = json_object(get_text(key.variable + LOGGED_SUFFIX)) or {}
        logged_before = int(cursor.get("seq") or 0)
        if (logged := self._log_progress(stored, flow, after_seq=logged_before)) != logged_before:
            from airflow.providers.common.compat.sdk import Variable

            ti = context["ti"]
            value = {"dag_id": ti.dag_id, "run_id": ti.run_id, "seq": logged}  # names its run, for the clean-up
            Variable.set(key.variable + LOGGED_SUFFIX, json.dumps(value), description=PROGRESS_LOGGED_DESCRIPTION)

    def _log_progress(self, stored: dict[str, Any], flow: str, after_seq: int = 0) -> int:
        """Log the record's progress reports after ``after_seq``; the number of the last one logged."""
        from airflow_octorpa.callbacks.progress import log_progress

        return log_progress(self.log, flow, stored, after_seq)

    def _on_timeout(self, key: ReportKey, flow: str, context: Context) -> Any:
        """End a timed-out wait; a report committed before its end is used (the app was told 200)."""
        from airflow_octorpa.callbacks.reports import expire

        ti = context.get("ti")
        try:
            stored = expire(key, getattr(ti, "dag_id", ""), getattr(ti, "run_id", ""))
        except Exception as err:  # noqa: BLE001 - cannot end it cleanly: it still times out
            self.log.warning("Could not mark the run's report record as expired (%s).", type(err).__name__)
            stored = None
        if stored is not None:
            self.log.info("The report of flowProcessNo=%s landed as the wait timed out; using it.", flow)
            return self._finish(stored, flow, context)
        try:
            self._keep_report_for_page(self._read(key) or {}, context)
        except OctoRpaReportUnreadableError:
            pass  # the page then shows the live records only, while its DAG run lasts
        self.log.info(
            "Asked Octopus RPA run flowProcessNo=%s to stop (the wait timed out): its app hears it at its next "
            "request to Airflow; the run's page shows when it did.",
            flow,
        )
        raise self._ending(AirflowSensorTimeout(self._timeout_message(flow)))

    def _read(self, key: ReportKey, confirm: Context | None = None) -> dict[str, Any] | None:
        """The record; with ``confirm`` (the context), a None is checked to mean "gone" (Airflow says
        "not found" for a failed read too); raises :class:`OctoRpaReportUnreadableError` when it cannot tell."""
        from airflow_octorpa.callbacks.reports import read
        from airflow_octorpa.storage import confirm_variables_answer

        try:
            stored = read(key)
            if stored is None and confirm is not None:
                ti = confirm.get("ti")
                names_run = {"dag_id": getattr(ti, "dag_id", None), "run_id": getattr(ti, "run_id", None)}
                confirm_variables_answer(key.variable + ".probe", names_run, key.variable)
                stored = read(key)
        except (RecordUnreadable, RuntimeError) as err:
            raise OctoRpaReportUnreadableError(
                f"The run's report record cannot be read ({err}). Check that every Airflow component has the "
                "same [core] fernet_key and reaches the metadata database (Airflow 3: the API server); the "
                "task's retries read it again. The run may still report: do not clear the trigger task."
            ) from err
        return stored

    def _finish(self, stored: dict[str, Any], flow: str, context: Context) -> dict[str, Any]:
        self._keep_report_for_page(stored, context)
        status = stored.get("status")
        message = stored.get("message") or ""
        if status == FAILED:
            raise self._ending(
                AirflowFailException(
                    f"Octopus RPA run flowProcessNo={flow} reported that it failed: {message or '(no message)'}. "
                    "Look the run up in the Octopus RPA console; clearing the trigger task starts the app again."
                )
            )
        if status == EXPIRED:
            raise self._ending(
                AirflowFailException(
                    f"The wait for Octopus RPA run flowProcessNo={flow} has already ended (an earlier try timed out, "
                    "or a later try of the trigger task started another call); its report is no longer accepted. "
                    "Look the run up in the Octopus RPA console before clearing the trigger task, which starts "
                    "the app again."
                )
            )
        if status != SUCCEEDED:
            raise AirflowFailException(
                f"Octopus RPA run flowProcessNo={flow} has an unreadable report ({status!r:.40})."
            )
        outputs = stored.get("outputs") or {}
        result = {
            "flow_process_no": flow,
            "status": status,
            "outputs": outputs,
            "message": message,
            "reported_at": stored.get("reported_at"),
        }
        self.log.info(
            "Octopus RPA run flowProcessNo=%s succeeded: %s; outputs: %s.",
            flow,
            message or "(no message)",
            ", ".join(sorted(outputs)) or "(none)",  # their names only: values may be personal data
        )
        outlet_events = context.get("outlet_events")
        for outlet in getattr(self, "outlets", None) or []:
            if outlet_events is not None:
                outlet_events[outlet].extra.update(result)
        return result

    def _keep_report_for_page(self, stored: dict[str, Any], context: Context) -> None:
        """Copy the run's report record and its cancel to the XCom ``octorpa_report``: the run's page
        reads it once the DAG run's end removed them. A failed copy only makes the page say less."""
        from airflow_octorpa.callbacks.run_page import REPORT_XCOM, report_snapshot
        from airflow_octorpa.storage import get_text, json_object

        key, _ = self._key_and_flow()
        try:
            cancel = json_object(get_text(key.cancel))
            trigger = (str(stored.get("task_id", "")), int(stored.get("map_index", -1)))
            context["ti"].xcom_push(key=REPORT_XCOM, value=report_snapshot(stored, cancel, trigger))
        except Exception as err:  # noqa: BLE001 - the page's copy is no reason to fail the wait
            self.log.warning("Could not keep the run's report for its page (%s: %s).", type(err).__name__, err)

    def _ending(self, error: AirflowException) -> AirflowException:
        """The same end whether the worker or the trigger found it: ``soft_fail`` skips."""
        if self.soft_fail or getattr(self, "never_fail", False):
            return AirflowSkipException(f"Skipped (soft_fail): {error}")
        return error

    def _key_and_flow(self) -> tuple[ReportKey, str]:
        run = rendered_mapping(self.started_run)
        text, flow = run.get("report_key"), run.get("flow_process_no")
        key = ReportKey.parse(str(text)) if text else None
        if key is None or not flow:
            raise AirflowFailException(
                f"started_run names no reported call ({run!r:.200}): give the XCom of an OctoRpaTriggerOperator with "
                "callback=True (trigger.output)."
            )
        return key, str(flow)

    def _missing(self, flow: str) -> AirflowFailException:
        return AirflowFailException(
            f"No record awaits a report for Octopus RPA run flowProcessNo={flow}: it was removed (its DAG run "
            "ended, or octorpa cleanup swept it). The run may have reported, or may still be running: look it up "
            "in the Octopus RPA console before clearing the trigger task, which starts the app again."
        )

    def _timeout_message(self, flow: str) -> str:
        return (
            f"Octopus RPA run flowProcessNo={flow} did not report its end within {float(self.timeout or 0):g} s. Look it up "
            "in the Octopus RPA console: it may still be running, or its last step (the callback) may have "
            "failed. Reports for it are no longer accepted."
        )


def _started_run(started_run: Any, run: Any) -> Any:
    """``started_run``, or ``run`` (its 0.x name) with a deprecation warning."""
    if run is None:
        if started_run is None:
            raise TypeError("OctoRpaRunSensor needs started_run: the trigger task's XCom (trigger.output).")
        return started_run
    if started_run is not None:
        raise TypeError("OctoRpaRunSensor got started_run and run, its old name: give started_run only.")
    warnings.warn(
        "OctoRpaRunSensor(run=...) is renamed started_run=... (run shadows BaseOperator.run on Airflow 2); "
        "run= will be removed in 1.0.",
        AirflowProviderDeprecationWarning,
        stacklevel=3,
    )
    return run


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
    wait = OctoRpaRunSensor(task_id=f"{task_id}_wait", started_run=start.output, **dict(wait_kwargs or {}))
    return start, wait
