"""Operator that starts an 八爪鱼RPA (Octopus RPA) app through its webhook trigger."""

from __future__ import annotations

import ast
import json
import math
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowTaskTimeout, BaseOperator, conf

from airflow_octorpa import metrics
from airflow_octorpa.call_record import STARTED, CallLedger, CallRecord, map_index_of
from airflow_octorpa.callbacks.token import DEFAULT_CALLBACK_PARAM
from airflow_octorpa.exceptions import (
    CallOutcome,
    OctoRpaConfigurationError,
    OctoRpaError,
    OctoRpaInvalidParamsError,
    OctoRpaNotAWebhookError,
    OctoRpaTryLaterError,
    OctoRpaUnknownOutcomeError,
)
from airflow_octorpa.pool_facts import facts_of, pool_slots
from airflow_octorpa.rate_limit import DEFAULT_POOL

# Shorter holds are kept in the worker even when deferrable. Deferring costs slot time (the resume,
# and the triggerer's hand-off when it is on another host), and on Airflow 3.3 a trigger that fires
# within seconds of the deferral can race the executor's late report of the deferral's exit (it
# comes up to ~5 s after), which makes the scheduler fail the resumed task as "state changed
# externally". A triggerer on the worker's host fires the remaining hold after the deferral, with
# no hand-off added: 6 s still leaves that report a second.
_MIN_DEFERRAL_SECONDS = 6.0
# What execution_timeout must leave beyond the call and the hold: the record's writes, the logs.
_TIMEOUT_MARGIN_SECONDS = 5.0
_DEFER_HINT = ", or set deferrable=True to keep the slot in the triggerer"
# The longest a worker sleeps (holding its slot) before resending a refused call; past it the task
# fails, having started nothing, and its own retries try again after retry_delay.
MAX_RESEND_WAIT_SECONDS = 120.0

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_octorpa.callbacks.token import CallbackToken
    from airflow_octorpa.hooks.octorpa import OctoRpaHook, OctoRpaWebhookConfig, PreparedCall


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
        self._report_key: str | None = None  # the SHA-256 of this call's callback token
        self._last_exchange_end: float | None = None  # time.monotonic() when the last exchange ended
        self._started: dict[str, str | None] | None = None  # the run this try started, once answered
        self._in_flight: CallRecord | None = None  # the call whose answer was cut off by a timeout
        self._result: dict[str, Any] | None = None  # what the task returns, for OpenLineage
        self._hold_deferred = False  # whether this try defers a long hold (see _decide_where_to_hold)
        self._ledger: CallLedger | None = None
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
        began = time.monotonic()
        app_params = rendered_app_params(self.app_params)
        config = self.hook.config
        self._warn_outside_pool(config.pool)
        self._warn_unsigned(config)
        self._warn_unlike_a_webhook(config)
        callback = self._new_callback(app_params, context) if self.callback else None  # no base URL: nothing sent
        if callback is not None:
            app_params = {**app_params, self.callback_param: callback.url}
        call = self.hook.prepare(app_params, bot_id=self.bot_id or None)  # bad input: nothing sent
        pool = facts_of(self.pool)
        self._warn_missing_pool(pool.exists)
        self._decide_where_to_hold(pool.counts_deferred)
        deadline = self._execution_deadline(config, began)  # a timeout that cannot fit: nothing sent
        ledger = self._ledger = CallLedger.from_context(context, self.log)
        self._ti = context.get("ti")
        if (prior := ledger.prior()) is not None:
            if prior.state == STARTED and prior.result is not None:
                self.log.info(
                    "An earlier try already started Octopus RPA run flowProcessNo=%s at %s; not triggering again.",
                    prior.result.get("flow_process_no"),
                    prior.sent_at_text,
                )
                return self._finished(prior.result)
            if not self.resend_on_unknown_outcome:
                raise self._unknown_outcome_error(prior, "An earlier try of this task")
            self.log.warning(
                "An earlier try sent this call at %s and its outcome is unknown; sending it again because "
                "resend_on_unknown_outcome=True. The app may run twice.",
                prior.sent_at_text,
            )
        self._last_exchange_end = self._started = self._in_flight = None
        self._report_key = self._register_report(callback, context) if callback is not None else None
        try:
            result = self._send_until_accepted(call, config, ledger, deadline)
            return self._keep_slot(result, config.hold)
        except AirflowTaskTimeout as timeout:
            # A BaseException: without this the slot would be freed before the hold is over.
            return self._after_timeout(timeout, config.hold)
        except Exception:
            try:
                self._wait_out_hold(config.hold)  # a refused call counts against the limits too
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
        return self._finished(result)

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

    def _finished(self, result: dict[str, Any]) -> dict[str, Any]:
        self._result = result
        return result

    def _keep_slot(self, result: dict[str, str | None], hold: float) -> dict[str, str | None]:
        """Keep the pool slot for the rest of the hold: in the triggerer when deferrable, else here."""
        remaining = self._hold_remaining(hold)
        if self._defers_hold() and remaining > _MIN_DEFERRAL_SECONDS:
            metrics.slot_hold(remaining, self.octorpa_conn_id)
            from airflow_octorpa.triggers.octorpa import OctoRpaSlotHoldTrigger

            self.log.info("Keeping the pool slot for %.1f s (deferred) so the account's rate limits hold.", remaining)
            # Ends when the hold would end here, if the triggerer shares this host's monotonic
            # clock; else the rest is timed from the trigger's start, and getting there lengthens it.
            self.defer(
                trigger=OctoRpaSlotHoldTrigger.until(self._hold_deadline(hold), result),
                method_name="execute_complete",
            )
        self._wait_out_hold(hold)
        return self._finished(result)

    def _after_timeout(self, timeout: AirflowTaskTimeout, hold: float) -> dict[str, str | None]:
        """``execution_timeout`` fired: keep the slot for the hold anyway, and end in a state that
        says what the call did."""
        if self._started is not None:
            self.log.warning(
                "execution_timeout fired after Octopus RPA run flowProcessNo=%s started; the task keeps its "
                "pool slot for the rest of the hold and succeeds with that run, since failing would invite a "
                "clear that starts it again.",
                self._started["flow_process_no"],
            )
            return self._keep_slot(self._started, hold)
        self._wait_out_hold(hold)
        if self._in_flight is not None:
            raise self._unknown_outcome_error(
                self._in_flight, "This call", cause="execution_timeout fired while it waited for the answer"
            ) from timeout
        raise timeout  # nothing was started: the task's retries may send the call again

    def _execution_deadline(self, config: OctoRpaWebhookConfig, began: float) -> float | None:
        """When ``execution_timeout`` ends (monotonic), once it is known to fit a call and its hold."""
        if not self.execution_timeout:
            return None
        budget = self.execution_timeout.total_seconds()
        from airflow_octorpa.version_compat import execution_timeout_spans_deferral

        if budget < (needed := self._attempt_seconds(config)):
            raise OctoRpaConfigurationError(
                f"execution_timeout={self.execution_timeout} cannot fit one Octopus RPA call (the connection's "
                f"timeout, {config.timeout:g} s), the slot hold kept in the worker after it "
                f"({self._worker_hold(config.hold):g} s) and {_TIMEOUT_MARGIN_SECONDS:g} s to record it; a timeout "
                f"there would free the pool slot early or cut off a run that started. Give at least "
                f"{math.ceil(needed)} s"
                + ("" if self.deferrable or execution_timeout_spans_deferral() else _DEFER_HINT)
                + ", or lower the connection's timeout. Nothing was sent."
            )
        return began + budget

    def _attempt_seconds(self, config: OctoRpaWebhookConfig) -> float:
        """The most one attempt can take in this try: the call, the hold kept here, the bookkeeping."""
        return config.timeout + self._worker_hold(config.hold) + _TIMEOUT_MARGIN_SECONDS

    def _worker_hold(self, hold: float) -> float:
        """The longest this task keeps its slot in the worker after a call."""
        return min(hold, _MIN_DEFERRAL_SECONDS) if self._defers_hold() else hold

    def _defers_hold(self) -> bool:
        """Whether a long hold goes to the triggerer (decided once a try by :meth:`_decide_where_to_hold`)."""
        return self._hold_deferred

    def _decide_where_to_hold(self, counts: bool | None) -> None:
        """Defer long holds only where the slot stays taken until the hold ends (``counts``: whether the
        pool counts deferred tasks, None when unknown); say why not otherwise."""
        from airflow_octorpa.version_compat import execution_timeout_spans_deferral

        self._hold_deferred = False
        if not self.deferrable:
            return
        if self.execution_timeout and execution_timeout_spans_deferral():
            return self.log.info(
                "Keeping the slot hold in the worker although deferrable=True: on Airflow 2 execution_timeout "
                "also counts the time a task is deferred, and its end would cancel the hold early. Remove "
                "execution_timeout to defer the hold."
            )
        if counts is not True:
            why = (
                f"the pool {self.pool!r} does not count deferred tasks, so a deferred hold would free its slot at once"
                if counts is False
                else f"whether the pool {self.pool!r} counts deferred tasks cannot be told here (on Airflow 3 "
                "the scheduler publishes it when a DAG run starts)"
            )
            return self.log.warning(
                "Keeping the slot hold in the worker although deferrable=True: %s. Fix: airflow pools set %s "
                "<slots> 'Octopus RPA webhook calls' --include-deferred, then check with octorpa doctor.",
                why,
                self.pool,
            )
        self._hold_deferred = True

    def _new_callback(self, app_params: dict[str, Any], context: Context) -> CallbackToken:
        """A token and URL for this call's report; refuses (nothing sent) what could not work."""
        from airflow.providers.common.compat.sdk import mask_secret

        from airflow_octorpa.callbacks.token import callback_base_url, is_loopback_url, new_callback

        if conf.getboolean("core", "multi_team", fallback=False):
            # A team's task writes team Variables, which the triggerer's in-process API (no team) cannot read.
            raise OctoRpaConfigurationError(
                "callback=True is not supported with Airflow's multi-team mode ([core] multi_team) yet: a deferred "
                "wait could not read the run's report. Use callback=False, or run this DAG without multi-team. "
                "Nothing was sent."
            )
        if self.callback_param in app_params:
            raise OctoRpaConfigurationError(
                f"app_params already has {self.callback_param!r}, the input variable that receives the callback "
                "URL. Rename that parameter, or set callback_param to another name. Nothing was sent."
            )
        base = callback_base_url()
        if is_loopback_url(base):
            self.log.warning(
                "The callback base URL %s is a loopback address: a robot on another machine cannot reach it. Set "
                "[octorpa] callback_base_url to the address robots reach Airflow at.",
                base,
            )
        ti = context.get("ti")
        if ti is None:
            raise OctoRpaConfigurationError(
                "callback=True needs an Airflow task instance to keep the run's report for: run the operator "
                "in a DAG (dag.test(), airflow dags test or a scheduler). Nothing was sent."
            )
        callback = new_callback(base, ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))
        mask_secret(callback.url)
        return callback

    def _register_report(self, callback: CallbackToken, context: Context) -> str:
        """Record that this call awaits a report, before it is sent: an app can report at once."""
        from airflow_octorpa.callbacks.reports import register
        from airflow_octorpa.exceptions import OctoRpaCallRecordError

        ti = context.get("ti")
        try:
            register(callback.key, ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))  # type: ignore[union-attr]
        except Exception as err:
            raise OctoRpaCallRecordError(
                f"Could not register the call's callback before sending it ({type(err).__name__}), so it was not "
                "sent. Check that Airflow's metadata database (and on Airflow 3 the API server) is reachable; the "
                "task's retries send it once it is."
            ) from err
        return str(callback.key)

    def _warn_outside_pool(self, account_pool: str) -> None:
        if self.pool != account_pool:
            self.log.warning(
                "This task runs in the pool %r, not %r: its webhook calls are not counted against the "
                "account's shared rate-limit budget, so calls from other tasks may be refused. Set "
                "pool=%r (or the connection's 'pool' extra).",
                self.pool,
                account_pool,
                account_pool,
            )

    def _warn_missing_pool(self, exists: bool | None) -> None:
        if exists is False:
            self.log.warning(
                "The pool %r does not exist. Under a scheduler this task waits in 'scheduled' for ever (only the "
                "scheduler's log says why); airflow dags test ignores pools, so it runs here. Create it: octorpa "
                "pool > octorpa-pool.json && airflow pools import octorpa-pool.json (or name an existing pool).",
                self.pool,
            )

    def _warn_unlike_a_webhook(self, config: OctoRpaWebhookConfig) -> None:
        from airflow_octorpa.hooks.url_shape import shape_warning

        if warning := shape_warning(config.url):
            self.log.warning("Connection %r: %s", self.octorpa_conn_id, warning)

    def _warn_unsigned(self, config: OctoRpaWebhookConfig) -> None:
        if not config.secret:
            self.log.warning(
                "Connection %r has no signing secret, so the webhook URL alone can start this app and it is "
                "shown unmasked in the connection's Host field. Turn on the trigger's signature check in the "
                "Octopus RPA console and put its 签名密钥 in the connection's password.",
                self.octorpa_conn_id,
            )

    def _send_until_accepted(
        self, call: PreparedCall, config: OctoRpaWebhookConfig, ledger: CallLedger, deadline: float | None
    ) -> dict[str, str | None]:
        """Send the call; resend only what cannot have started a run (rate-limited, never sent), and
        only while the wait is reasonable and the next attempt fits in ``execution_timeout``."""
        from tenacity import Retrying, retry_if_exception

        give_up: list[str] = []

        def stop(state: Any) -> bool:
            if state.attempt_number > self.rate_limit_retries:
                return True
            wait = state.upcoming_sleep
            if wait > MAX_RESEND_WAIT_SECONDS:
                give_up.append(f"the service asks to wait {wait:.0f} s, more than {MAX_RESEND_WAIT_SECONDS:g} s")
            elif deadline is not None and time.monotonic() + wait + self._attempt_seconds(config) > deadline:
                give_up.append(f"a resend in {wait:.0f} s would not fit in execution_timeout={self.execution_timeout}")
            return bool(give_up)

        retrying = Retrying(
            retry=retry_if_exception(lambda err: isinstance(err, OctoRpaError) and err.safe_to_resend),
            stop=stop,
            wait=lambda state: self._seconds_before_resend(config.hold, _failure(state)),
            before_sleep=self._log_resend,
            reraise=True,
        )
        try:
            return retrying(self._send_once, call, ledger, config.webhook_label)
        except OctoRpaError as err:
            if give_up and err.safe_to_resend:
                retry_after = getattr(err, "retry_after", None) or 0.0
                raise OctoRpaTryLaterError(err, give_up[0], time.time() + retry_after) from err
            raise

    def _log_resend(self, state: Any) -> None:
        metrics.count(metrics.RESENT, self.octorpa_conn_id)
        metrics.slot_hold(state.upcoming_sleep, self.octorpa_conn_id)  # the refused call's slot is kept too
        failure = _failure(state)
        self.log.warning(
            "Octopus RPA call not started (%s); sending it again in %.1f s (attempt %d of %d).",
            self._refusal_reason(failure),
            state.upcoming_sleep,
            state.attempt_number + 1,
            self.rate_limit_retries + 1,
        )

    def _refusal_reason(self, failure: BaseException | None) -> str:
        """What refused the call; for the rate limit, why the budget may have been overdrawn."""
        if not getattr(failure, "is_rate_limited", False):
            return f"{type(failure).__name__}: {failure}"[:300]
        status, code = getattr(failure, "status", None), getattr(failure, "code", None)
        config = self.hook.config
        causes = []
        slots = pool_slots(self.pool)
        if slots is not None and slots > config.pool_size:
            causes.append(
                f"the pool {self.pool!r} has {slots} slots but the connection's pool_size is {config.pool_size}: "
                f"the hold is computed for {config.pool_size}, so {slots} tasks call too often (make them equal)"
            )
        if self.pool != config.pool:
            causes.append(f"this task runs in the pool {self.pool!r}, not the account's {config.pool!r}")
        causes += [
            "calls outside the pool (OctoRpaHook.trigger() from your own code, octorpa trigger, another DAG's "
            "task in another pool)",
            "another system or Airflow deployment calling webhooks of the same account",
        ]
        return (
            f"refused for the account's rate limit: HTTP {status}" + (f", code {code!r}" if code else "") + ". "
            f"The connection's limits are {config.rate_limits}; likely causes: " + "; ".join(causes)
        )

    def _send_once(self, call: PreparedCall, ledger: CallLedger, webhook: str) -> dict[str, str | None]:
        """One request, recorded before it leaves and classified once it ends."""
        record = ledger.sending(webhook, call.bot_id)
        try:
            result = self.hook.send(call).to_dict()
            if self._report_key is not None:
                result["report_key"] = self._report_key
        except OctoRpaError as err:
            if err.outcome is CallOutcome.NOT_STARTED:
                if getattr(err, "is_rate_limited", False):
                    metrics.count(metrics.RATE_LIMITED, self.octorpa_conn_id)
                ledger.not_started()
                raise
            metrics.count(metrics.UNKNOWN_OUTCOME, self.octorpa_conn_id)
            ledger.unknown(record)
            if self.resend_on_unknown_outcome or isinstance(err, OctoRpaNotAWebhookError):
                raise  # the user chose Airflow retries to resend it; or the error says what to fix itself
            raise self._unknown_outcome_error(record, "This call", cause=str(err)) from err
        except BaseException:  # execution_timeout or a kill while the request was out
            self._in_flight = record
            metrics.count(metrics.UNKNOWN_OUTCOME, self.octorpa_conn_id)
            ledger.unknown(record)
            raise
        finally:
            self._last_exchange_end = time.monotonic()
        self._started = result
        metrics.count(metrics.STARTED, self.octorpa_conn_id)
        self.log.info(
            "Started Octopus RPA run flowProcessNo=%s (flowId=%s) with %d input variable(s).",
            result["flow_process_no"],
            result["flow_id"],
            len(call.params),
        )
        try:
            ledger.started(record, result)
        except Exception as err:  # the run started: a failed bookkeeping write must not fail the task
            self.log.warning(
                "Could not record that run flowProcessNo=%s started (%s: %s). The task goes on with it; a "
                "retry of this task would fail as 'may have started' rather than trigger again.",
                result["flow_process_no"],
                type(err).__name__,
                err,
            )
        return result

    def _unknown_outcome_error(
        self, record: CallRecord, who: str, cause: str | None = None
    ) -> OctoRpaUnknownOutcomeError:
        what = f" ({cause})" if cause is not None else ""
        return OctoRpaUnknownOutcomeError(
            f"{who} sent the Octopus RPA call at {record.sent_at_text} to webhook {record.webhook!r} "
            f"(robot {record.robot or 'chosen on the trigger'}) and got no usable answer{what}. The app MAY HAVE "
            "STARTED. Check the Octopus RPA console for a run at that time. If none started, clear this task "
            "to trigger again; retries will not resend it unless resend_on_unknown_outcome=True, which "
            "risks a second run."
        )

    def _hold_deadline(self, hold: float) -> float:
        """When this slot's hold ends (``time.monotonic()``): ``hold`` after the last exchange ended."""
        if self._last_exchange_end is None:
            return time.monotonic()
        return self._last_exchange_end + hold

    def _hold_remaining(self, hold: float) -> float:
        return max(0.0, self._hold_deadline(hold) - time.monotonic())

    def _seconds_before_resend(self, hold: float, error: BaseException | None) -> float:
        """Wait out this slot's hold and any Retry-After the service gave, whichever is later."""
        retry_after = getattr(error, "retry_after", None) or 0.0
        since_exchange = time.monotonic() - (self._last_exchange_end or time.monotonic())
        return max(self._hold_remaining(hold), retry_after - since_exchange, 0.0)

    def _wait_out_hold(self, hold: float) -> None:
        """Keep the slot here for the rest of the hold, all of it: an ``execution_timeout`` that fires
        meanwhile is raised once the hold is over."""
        if self._last_exchange_end is not None:
            metrics.slot_hold(self._hold_remaining(hold), self.octorpa_conn_id)
        if (remaining := self._hold_remaining(hold)) >= 0.1:
            self.log.info("Keeping the pool slot for %.1f s so the account's rate limits hold.", remaining)
        timeout: AirflowTaskTimeout | None = None
        while (remaining := self._hold_remaining(hold)) > 0:
            try:
                time.sleep(remaining)
            except AirflowTaskTimeout as fired:
                timeout = fired
        if timeout is not None:
            raise timeout


def _failure(state: Any) -> BaseException | None:
    """The exception of a tenacity attempt, if it failed."""
    return state.outcome.exception() if state.outcome is not None else None


def default_args_pool(partial_kwargs: Mapping[str, Any]) -> str | None:
    """The pool that ``default_args`` give a mapped task: its own, its task group's, its DAG's."""
    from airflow_octorpa.version_compat import current_dag_and_group

    dag, group = current_dag_and_group(partial_kwargs.get("dag"), partial_kwargs.get("task_group"))
    layers = [
        partial_kwargs.get("default_args"),
        getattr(group, "default_args", None),
        getattr(dag, "default_args", None),
    ]
    return next((layer["pool"] for layer in layers if isinstance(layer, Mapping) and layer.get("pool")), None)


def rendered_app_params(value: Any) -> dict[str, Any]:
    """Return rendered ``app_params`` as a dict.

    A whole-mapping template renders to text unless the DAG renders native objects, so text is
    read back as JSON, then as a Python literal (what ``str(dict)`` gives); it must be a mapping.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = _parse_mapping_text(value)
    if not isinstance(value, Mapping):
        raise OctoRpaInvalidParamsError(
            f"app_params must be a mapping of input variable names to values, got a "
            f"{type(value).__name__}: {value!r:.120}. Pass a dict, or a template that renders to one."
        )
    return dict(value)


def _parse_mapping_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise OctoRpaInvalidParamsError(
            f"app_params rendered to the text {text!r:.120}, which is not a mapping. A template for "
            "the whole app_params must render to a dict, for example "
            "\"{{ ti.xcom_pull(task_ids='extract') }}\" where that task returns a dict."
        ) from None
