"""Operator that starts an 八爪鱼RPA (Octopus RPA) app through its webhook trigger."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowTaskTimeout, BaseOperator, conf

from airflow_octorpa.call_record import STARTED, CallLedger
from airflow_octorpa.callbacks.run_page import OctoRpaRunLink
from airflow_octorpa.callbacks.token import DEFAULT_CALLBACK_PARAM
from airflow_octorpa.exceptions import OctoRpaConfigurationError, OctoRpaError
from airflow_octorpa.operators.rendered import default_args_pool, rendered_app_params
from airflow_octorpa.policy.slot_hold import SlotHold
from airflow_octorpa.policy.webhook_call import WebhookCall, unknown_outcome_error
from airflow_octorpa.rate_limit import DEFAULT_POOL

# What execution_timeout must leave beyond the call and the hold: the record's writes, the logs.
_TIMEOUT_MARGIN_SECONDS = 5.0
_DEFER_HINT = ", or set deferrable=True to keep the slot in the triggerer"

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_octorpa.hooks.octorpa import OctoRpaHook, OctoRpaWebhookConfig

# What 0.x code imported from here.
__all__ = ["OctoRpaTriggerOperator", "default_args_pool", "rendered_app_params"]


class OctoRpaTriggerOperator(BaseOperator):
    """
    Start an 八爪鱼RPA (Octopus RPA) app on a robot, with its input variables set from ``app_params``.

    The task's return value (XCom) is ``{"flow_process_no", "flow_id", "enterprise_id"}``:
    ``flow_process_no`` identifies the started run in the Octopus RPA console.

    :param app_params: The app's input variables by name (templated). Values keep their JSON type:
        ``10`` is sent as a number. Values may be ``XComArg``s (``task.output["key"]``), which
        resolve to native values, or Jinja strings. A single template string for the whole
        mapping must render to a mapping (a dict, or its JSON or Python text).
    :param bot_id: The robot id (机器人ID) to run on (templated); default: the connection's
        ``bot_id``, else the robot chosen on the trigger.
    :param octorpa_conn_id: The Airflow connection of type ``octorpa``.
    :param pool: Default ``"octorpa"`` (unless ``default_args`` name a pool): keep every trigger
        task in the connection's pool (see the README).
    :param deferrable: Hold the pool slot after the call in the triggerer instead of the worker
        (default: ``[operators] default_deferrable``). The task then resumes on a worker and ends
        exactly as in worker mode.
    :param rate_limit_retries: How many times a call that started nothing (refused for the rate
        limit, or never sent) is sent again, each after the slot hold and any ``Retry-After``.
    :param resend_on_unknown_outcome: When a call may have started a run (its answer was lost), let
        the task's retries send it again. Off by default: the app could run twice.
    :param callback: Give the app a URL to report its end to (see :class:`OctoRpaRunSensor`): one more
        input variable, named ``callback_param``, holds it. The XCom then carries ``report_key``,
        which the sensor waits on. Needs ``[octorpa] callback_base_url`` (or Airflow's base URL).
    :param callback_param: The input variable that receives the URL (the app must declare it).
    """

    template_fields: Sequence[str] = ("app_params", "bot_id")
    template_fields_renderers = {"app_params": "json"}
    ui_color = "#ffb74d"
    operator_extra_links = (OctoRpaRunLink(),)

    def __init__(
        self,
        *,
        app_params: Mapping[str, Any] | str | None = None,
        bot_id: str | None = None,
        octorpa_conn_id: str = "octorpa_default",
        pool: str | None = DEFAULT_POOL,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        rate_limit_retries: int = 3,
        resend_on_unknown_outcome: bool = False,
        callback: bool = False,
        callback_param: str = DEFAULT_CALLBACK_PARAM,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.app_params = app_params
        self.bot_id = bot_id
        self.octorpa_conn_id = octorpa_conn_id
        self.deferrable = deferrable
        self.rate_limit_retries = rate_limit_retries
        self.resend_on_unknown_outcome = resend_on_unknown_outcome
        self.callback = callback
        self.callback_param = callback_param
        self._result: dict[str, Any] | None = None  # what the task returns, for OpenLineage
        self._ledger: CallLedger | None = None  # for on_kill
        self._ti: Any = None

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Map the operator (``.partial(...).expand(app_params=...)``), in the ``octorpa`` pool unless
        the task or its ``default_args`` (the task's, its task group's, its DAG's) name a pool."""
        # BaseOperator.partial fills only BaseOperator's defaults, and "pool" is not among them.
        if "pool" not in kwargs and default_args_pool(kwargs) is None:
            kwargs["pool"] = DEFAULT_POOL
        return super().partial(**kwargs)

    @cached_property
    def hook(self) -> OctoRpaHook:
        """The hook for ``octorpa_conn_id`` (cached for the task's lifetime)."""
        from airflow_octorpa.hooks.octorpa import OctoRpaHook

        return OctoRpaHook(octorpa_conn_id=self.octorpa_conn_id)

    def execute(self, context: Context) -> dict[str, str | None]:
        from airflow_octorpa.operators.callback import new_callback, register_report
        from airflow_octorpa.operators.setup_warnings import warn_about_setup, warn_if_pool_missing
        from airflow_octorpa.pool_facts import facts_of

        began = time.monotonic()
        app_params = rendered_app_params(self.app_params)
        config = self.hook.config
        warn_about_setup(self.log, self.octorpa_conn_id, self.pool, config)
        # No base URL, no task instance: nothing sent.
        callback = new_callback(app_params, self.callback_param, context, self.log) if self.callback else None
        if callback is not None:
            app_params = {**app_params, self.callback_param: callback.url}
        call = self.hook.prepare(app_params, bot_id=self.bot_id or None)  # bad input: nothing sent
        pool = facts_of(self.pool)
        warn_if_pool_missing(self.log, self.pool, pool.exists)
        hold = self._slot_hold(config, pool.counts_deferred)
        deadline = self._execution_deadline(config, hold, began)  # a timeout that cannot fit: nothing sent
        ledger = self._ledger = CallLedger.from_context(context, self.log)
        self._ti = context.get("ti")
        if (done := self._result_of_an_earlier_try(ledger)) is not None:
            return self._finished(done, context)
        webhook_call = WebhookCall(
            self.hook,
            ledger,
            hold,
            pool=self.pool,
            rate_limit_retries=self.rate_limit_retries,
            resend_on_unknown_outcome=self.resend_on_unknown_outcome,
            log=self.log,
            report_key=register_report(callback, context) if callback is not None else None,
        )
        try:
            result = webhook_call.send_until_accepted(
                call,
                deadline=deadline,
                attempt_seconds=self._attempt_seconds(config, hold),
                execution_timeout=self.execution_timeout,
            )
            return self._keep_slot(result, hold, context)
        except AirflowTaskTimeout as timeout:
            # A BaseException: without this the slot would be freed before the hold is over.
            return self._after_timeout(timeout, webhook_call, hold, context)
        except Exception:
            keep_call_for_page(context, self.log, ledger)  # the refusal's request id, for the run's page
            try:
                hold.wait_out()  # a refused call counts against the limits too
            except AirflowTaskTimeout:
                pass  # fired during the hold, which was kept in full: the call's own error says more
            raise

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, str | None]:
        """Resume on a worker after a deferred slot hold and end the task as worker mode does."""
        result = (event or {}).get("result")
        if not isinstance(result, dict) or not result.get("flow_process_no"):
            raise OctoRpaError(
                f"The task resumed after its slot hold with the event {event!r:.200}, which names no started "
                "run. Its run did start: find it in the Octopus RPA console by this task's start time."
            )
        self.log.info("Slot hold over; Octopus RPA run flowProcessNo=%s.", result["flow_process_no"])
        return self._finished(result, context)

    def on_kill(self) -> None:
        """Airflow 2 stops a running task that is cleared this way: mark its call record so that
        the next try is a new trigger, as after any other clear."""
        from airflow_octorpa.version_compat import cleared_while_running

        if self._ledger is None or not cleared_while_running(self._ti):
            return
        try:
            self._ledger.cleared()
            self.log.info("This task was cleared while it ran: its next try triggers the app anew.")
        except Exception as err:  # noqa: BLE001 - the record stays as it was: the next try will not resend
            self.log.warning("Could not mark the call record as cleared (%s: %s).", type(err).__name__, err)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """An ``octorpa`` run facet naming the webhook, the robot and the started run (OpenLineage)."""
        if self._result is None:
            return None
        from airflow_octorpa.openlineage import operator_lineage

        config = self.hook.config
        return operator_lineage(config.webhook_label, self.bot_id or config.bot_id, self._result)

    def _finished(self, result: dict[str, Any], context: Context) -> dict[str, Any]:
        self._result = result
        keep_call_for_page(context, self.log, self._ledger)
        return result

    def _result_of_an_earlier_try(self, ledger: CallLedger) -> dict[str, Any] | None:
        """The run an earlier try started; raises when an earlier try's call may have started one."""
        if (prior := ledger.prior()) is None:
            return None
        if prior.state == STARTED and prior.result is not None:
            self.log.info(
                "An earlier try already started Octopus RPA run flowProcessNo=%s at %s; not triggering again.",
                prior.result.get("flow_process_no"),
                prior.sent_at_text,
            )
            return prior.result
        if not self.resend_on_unknown_outcome:
            raise unknown_outcome_error(prior, "An earlier try of this task")
        self.log.warning(
            "An earlier try sent this call at %s and its outcome is unknown; sending it again because "
            "resend_on_unknown_outcome=True. The app may run twice.",
            prior.sent_at_text,
        )
        return None

    def _slot_hold(self, config: OctoRpaWebhookConfig, counts_deferred: bool | None) -> SlotHold:
        """This try's hold; deferred where the pool keeps a deferred task's slot taken."""
        from airflow_octorpa.policy.slot_hold import where_to_hold
        from airflow_octorpa.version_compat import execution_timeout_spans_deferral

        timeout_counts_deferral = bool(self.execution_timeout) and execution_timeout_spans_deferral()
        deferred = where_to_hold(self.deferrable, timeout_counts_deferral, self.pool, counts_deferred, self.log)
        return SlotHold(config.hold, self.octorpa_conn_id, self.log, deferred=deferred)

    def _keep_slot(self, result: dict[str, str | None], hold: SlotHold, context: Context) -> dict[str, str | None]:
        """Keep the pool slot for the rest of the hold: in the triggerer when deferred, else here."""
        if hold.goes_to_triggerer():
            from airflow_octorpa import metrics
            from airflow_octorpa.triggers.octorpa import OctoRpaSlotHoldTrigger

            remaining = hold.remaining()
            metrics.slot_hold(remaining, self.octorpa_conn_id)
            self.log.info("Keeping the pool slot for %.1f s (deferred) so the account's rate limits hold.", remaining)
            # Ends when the hold would end here, if the triggerer shares this host's monotonic
            # clock; else the rest is timed from the trigger's start, and getting there lengthens it.
            self.defer(trigger=OctoRpaSlotHoldTrigger.until(hold.deadline(), result), method_name="execute_complete")
        hold.wait_out()
        return self._finished(result, context)

    def _after_timeout(
        self, timeout: AirflowTaskTimeout, call: WebhookCall, hold: SlotHold, context: Context
    ) -> dict[str, str | None]:
        """``execution_timeout`` fired: keep the slot for the hold anyway, and end in a state that
        says what the call did."""
        if call.started is not None:
            self.log.warning(
                "execution_timeout fired after Octopus RPA run flowProcessNo=%s started; the task keeps its "
                "pool slot for the rest of the hold and succeeds with that run, since failing would invite a "
                "clear that starts it again.",
                call.started["flow_process_no"],
            )
            return self._keep_slot(call.started, hold, context)
        hold.wait_out()
        if call.in_flight is not None:
            raise unknown_outcome_error(
                call.in_flight, "This call", cause="execution_timeout fired while it waited for the answer"
            ) from timeout
        raise timeout  # nothing was started: the task's retries may send the call again

    def _execution_deadline(self, config: OctoRpaWebhookConfig, hold: SlotHold, began: float) -> float | None:
        """When ``execution_timeout`` ends (monotonic), once it is known to fit a call and its hold."""
        if not self.execution_timeout:
            return None
        budget = self.execution_timeout.total_seconds()
        from airflow_octorpa.version_compat import execution_timeout_spans_deferral

        if budget < (needed := self._attempt_seconds(config, hold)):
            raise OctoRpaConfigurationError(
                f"execution_timeout={self.execution_timeout} cannot fit one Octopus RPA call (the connection's "
                f"timeout, {config.timeout:g} s), the slot hold kept in the worker after it "
                f"({hold.in_worker_at_most:g} s) and {_TIMEOUT_MARGIN_SECONDS:g} s to record it; a timeout "
                f"there would free the pool slot early or cut off a run that started. Give at least "
                f"{math.ceil(needed)} s"
                + ("" if self.deferrable or execution_timeout_spans_deferral() else _DEFER_HINT)
                + ", or lower the connection's timeout. Nothing was sent."
            )
        return began + budget

    def _attempt_seconds(self, config: OctoRpaWebhookConfig, hold: SlotHold) -> float:
        """The most one attempt can take in this try: the call, the hold kept here, the bookkeeping."""
        return config.timeout + hold.in_worker_at_most + _TIMEOUT_MARGIN_SECONDS


def keep_call_for_page(context: Context, log: Any, ledger: CallLedger | None = None) -> None:
    """Copy the call record to the XCom ``octorpa_call``: the run's page reads it once the DAG run's
    end removed the record. The ledger's last record where this try has one (else, resumed after a
    deferral, it is read). A failed copy only makes the page say less."""
    from dataclasses import asdict

    from airflow_octorpa.call_record import record_store
    from airflow_octorpa.callbacks.run_page import CALL_XCOM, call_snapshot

    ti = context.get("ti")
    try:
        if ledger is not None and ledger.last is not None:
            raw: Any = asdict(ledger.last)
        else:
            store = record_store(context)
            raw = store.read() if store is not None else None
        if isinstance(raw, dict) and ti is not None:
            ti.xcom_push(key=CALL_XCOM, value=call_snapshot(raw))
    except Exception as err:  # noqa: BLE001 - the page's copy is no reason to fail the task
        log.warning("Could not keep the call record for the run's page (%s: %s).", type(err).__name__, err)
