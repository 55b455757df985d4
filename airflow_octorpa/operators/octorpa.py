"""Operator that starts an 八爪鱼RPA (Octopus RPA) app through its webhook trigger."""

from __future__ import annotations

import ast
import json
import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, conf

from airflow_octorpa.call_record import STARTED, CallLedger, CallRecord
from airflow_octorpa.exceptions import CallOutcome, OctoRpaError, OctoRpaInvalidParamsError, OctoRpaUnknownOutcomeError
from airflow_octorpa.rate_limit import DEFAULT_POOL

# Below this, deferring costs more (a triggerer round trip) than waiting in the worker.
_MIN_DEFERRAL_SECONDS = 2.0

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_octorpa.hooks.octorpa import OctoRpaHook, PreparedCall


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
    :param pool: Default ``"octorpa"``: keep every trigger task in that pool (see the README).
    :param deferrable: Hold the pool slot after the call in the triggerer instead of the worker
        (default: ``[operators] default_deferrable``). The result is the same either way.
    :param rate_limit_retries: How many times a call that started nothing (refused for the rate
        limit, or never sent) is sent again, each after the slot hold and any ``Retry-After``.
    :param resend_on_unknown_outcome: When a call may have started a run (its answer was lost), let
        the task's retries send it again. Off by default: the app could run twice.
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
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.app_params = app_params
        self.bot_id = bot_id
        self.octorpa_conn_id = octorpa_conn_id
        self.deferrable = deferrable
        self.rate_limit_retries = rate_limit_retries
        self.resend_on_unknown_outcome = resend_on_unknown_outcome
        self._last_exchange_end: float | None = None  # when this task's last webhook exchange ended

    @classmethod
    def partial(cls, **kwargs: Any):  # type: ignore[override]
        """Map the operator (``.partial(...).expand(app_params=...)``), in the ``octorpa`` pool by default."""
        # BaseOperator.partial only fills the defaults it knows, so the pool default is set here.
        kwargs.setdefault("pool", DEFAULT_POOL)
        return super().partial(**kwargs)

    @cached_property
    def hook(self) -> OctoRpaHook:
        """The hook for ``octorpa_conn_id`` (cached for the task's lifetime)."""
        from airflow_octorpa.hooks.octorpa import OctoRpaHook

        return OctoRpaHook(octorpa_conn_id=self.octorpa_conn_id)

    def execute(self, context: Context) -> dict[str, str | None]:
        app_params = rendered_app_params(self.app_params)
        config = self.hook.config
        self._warn_outside_pool(config.pool)
        call = self.hook.prepare(app_params, bot_id=self.bot_id or None)  # bad input: nothing sent
        ledger = CallLedger.from_context(context, self.retries, self.log)
        if (prior := ledger.prior()) is not None:
            if prior.state == STARTED and prior.result is not None:
                self.log.info(
                    "An earlier try already started Octopus RPA run flowProcessNo=%s at %s; not triggering again.",
                    prior.result.get("flow_process_no"),
                    prior.sent_at_text,
                )
                return prior.result
            if not self.resend_on_unknown_outcome:
                raise self._unknown_outcome_error(prior, "An earlier try of this task")
            self.log.warning(
                "An earlier try sent this call at %s and its outcome is unknown; sending it again because "
                "resend_on_unknown_outcome=True. The app may run twice.",
                prior.sent_at_text,
            )
        hold = config.hold
        self._last_exchange_end = None
        try:
            result = self._send_until_accepted(call, hold, ledger, config.webhook_id)
        except Exception:
            self._wait_out_hold(hold)  # a refused call counts against the limits too
            raise
        hold_until = self._hold_until(hold)
        if self.deferrable and hold_until - time.time() > _MIN_DEFERRAL_SECONDS:
            from airflow_octorpa.triggers.octorpa import OctoRpaSlotHoldTrigger

            self.log.info(
                "Keeping the pool slot for %.1f s (deferred) to stay within %s.",
                hold_until - time.time(),
                config.rate_limits,
            )
            context["ti"].xcom_push(key="return_value", value=result)  # the trigger ends the task
            self.defer(trigger=OctoRpaSlotHoldTrigger(hold_until=hold_until), method_name="execute_complete")
        self._wait_out_hold(hold)
        return result

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, str | None]:
        """Resume after a deferred slot hold (only where the trigger could not end the task itself,
        as under ``dag.test()``): the result was recorded before deferring."""
        prior = CallLedger.from_context(context, self.retries, self.log).prior()
        if prior is None or prior.state != STARTED or prior.result is None:
            raise OctoRpaError(
                "The task resumed after its slot hold but finds no started run in its record; check the "
                "Octopus RPA console for the run this task started."
            )
        return prior.result

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

    def _send_until_accepted(
        self, call: PreparedCall, hold: float, ledger: CallLedger, webhook: str
    ) -> dict[str, str | None]:
        """Send the call; resend only what cannot have started a run (rate-limited, never sent)."""
        from tenacity import Retrying, retry_if_exception, stop_after_attempt

        retrying = Retrying(
            retry=retry_if_exception(lambda err: isinstance(err, OctoRpaError) and err.safe_to_resend),
            stop=stop_after_attempt(self.rate_limit_retries + 1),
            wait=lambda state: self._seconds_before_resend(hold, state.outcome.exception()),
            before_sleep=lambda state: self.log.warning(
                "Octopus RPA call not started (%s); sending it again in %.1f s (attempt %d of %d).",
                type(state.outcome.exception()).__name__,
                state.upcoming_sleep,
                state.attempt_number + 1,
                self.rate_limit_retries + 1,
            ),
            reraise=True,
        )
        return retrying(self._send_once, call, ledger, webhook)

    def _send_once(self, call: PreparedCall, ledger: CallLedger, webhook: str) -> dict[str, str | None]:
        """One request, recorded before it leaves and classified once it ends."""
        record = ledger.sending(webhook, call.bot_id)
        try:
            result = self.hook.send(call).to_dict()
        except OctoRpaError as err:
            if err.outcome is CallOutcome.NOT_STARTED:
                ledger.not_started()
                raise
            ledger.unknown(record)
            if self.resend_on_unknown_outcome:  # the user chose Airflow retries to resend it
                raise
            raise self._unknown_outcome_error(record, "This call", cause=err) from err
        finally:
            self._last_exchange_end = time.time()
        self.log.info(
            "Started Octopus RPA run flowProcessNo=%s (flowId=%s) with %d input variable(s).",
            result["flow_process_no"],
            result["flow_id"],
            len(call.params),
        )
        ledger.started(record, result)
        return result

    def _unknown_outcome_error(
        self, record: CallRecord, who: str, cause: Exception | None = None
    ) -> OctoRpaUnknownOutcomeError:
        what = f" ({cause})" if cause is not None else ""
        return OctoRpaUnknownOutcomeError(
            f"{who} sent the Octopus RPA call at {record.sent_at_text} to webhook {record.webhook!r} "
            f"(robot {record.robot or 'chosen on the trigger'}) and got no usable answer{what}. The app MAY HAVE "
            "STARTED. Check the Octopus RPA console for a run at that time. If none started, clear this task "
            "to trigger again; retries will not resend it unless resend_on_unknown_outcome=True, which "
            "risks a second run."
        )

    def _hold_until(self, hold: float) -> float:
        return (self._last_exchange_end or 0.0) + hold

    def _seconds_before_resend(self, hold: float, error: BaseException | None) -> float:
        """Wait out this slot's hold and any Retry-After the service gave, whichever is later."""
        retry_after = getattr(error, "retry_after", None) or 0.0
        resend_at = max(self._hold_until(hold), (self._last_exchange_end or 0.0) + retry_after)
        return max(0.0, resend_at - time.time())

    def _wait_out_hold(self, hold: float) -> None:
        if self._last_exchange_end is not None and (remaining := self._hold_until(hold) - time.time()) > 0:
            if remaining >= 0.1:
                self.log.info("Keeping the pool slot for %.1f s so the account's rate limits hold.", remaining)
            time.sleep(remaining)


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
