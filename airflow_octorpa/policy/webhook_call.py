"""The webhook call: send it, record and classify what happened, resend only what started nothing."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_octorpa import metrics
from airflow_octorpa.exceptions import (
    CallOutcome,
    OctoRpaError,
    OctoRpaNotAWebhookError,
    OctoRpaTryLaterError,
    OctoRpaUnknownOutcomeError,
)

if TYPE_CHECKING:
    from airflow_octorpa.call_record import CallLedger, CallRecord
    from airflow_octorpa.hooks.octorpa import OctoRpaHook, PreparedCall
    from airflow_octorpa.policy.slot_hold import SlotHold

# The longest a worker sleeps (holding its slot) before resending a refused call; past it the task
# fails, having started nothing, and its own retries try again after retry_delay.
MAX_RESEND_WAIT_SECONDS = 120.0


class WebhookCall:
    """One try's call of the webhook, through ``hook``, recorded in ``ledger``, its slot kept by ``hold``.

    After :meth:`send_until_accepted` ends (or is cut off by a timeout), ``started`` is the run it
    started, if the service answered so, and ``in_flight`` the record of a request whose answer
    was cut off.
    """

    def __init__(
        self,
        hook: OctoRpaHook,
        ledger: CallLedger,
        hold: SlotHold,
        *,
        pool: str,
        rate_limit_retries: int,
        resend_on_unknown_outcome: bool,
        log: Any,
        report_key: str | None = None,
    ) -> None:
        self.hook, self.ledger, self.hold = hook, ledger, hold
        self.pool = pool
        self.rate_limit_retries = rate_limit_retries
        self.resend_on_unknown_outcome = resend_on_unknown_outcome
        self.log = log
        self.report_key = report_key
        self.started: dict[str, str | None] | None = None
        self.in_flight: CallRecord | None = None
        self.refusals: list[dict[str, Any]] = []  # this try's refused attempts, for the run's page

    @property
    def conn_id(self) -> str:
        return self.hook.octorpa_conn_id

    def send_until_accepted(
        self,
        call: PreparedCall,
        *,
        deadline: float | None = None,
        attempt_seconds: float = 0.0,
        execution_timeout: timedelta | None = None,
    ) -> dict[str, str | None]:
        """Send the call; resend only what cannot have started a run (rate-limited, never sent), and
        only while the wait is reasonable and the next attempt (``attempt_seconds``) fits before
        ``deadline`` (monotonic, the end of ``execution_timeout``)."""
        from tenacity import Retrying, retry_if_exception

        give_up: list[str] = []

        def stop(state: Any) -> bool:
            if state.attempt_number > self.rate_limit_retries:
                return True
            wait = state.upcoming_sleep
            if wait > MAX_RESEND_WAIT_SECONDS:
                give_up.append(f"the service asks to wait {wait:.0f} s, more than {MAX_RESEND_WAIT_SECONDS:g} s")
            elif deadline is not None and time.monotonic() + wait + attempt_seconds > deadline:
                give_up.append(f"a resend in {wait:.0f} s would not fit in execution_timeout={execution_timeout}")
            return bool(give_up)

        retrying = Retrying(
            retry=retry_if_exception(lambda err: isinstance(err, OctoRpaError) and err.safe_to_resend),
            stop=stop,
            wait=lambda state: self.hold.seconds_before_resend(_failure(state)),
            before_sleep=self._log_resend,
            reraise=True,
        )
        try:
            return retrying(self._send_once, call)
        except OctoRpaError as err:
            if give_up and err.safe_to_resend:
                retry_after = getattr(err, "retry_after", None) or 0.0
                raise OctoRpaTryLaterError(err, give_up[0], time.time() + retry_after) from err
            raise

    def _send_once(self, call: PreparedCall) -> dict[str, str | None]:
        """One request, recorded before it leaves and classified once it ends."""
        webhook = self.hook.config.webhook_label
        slot = {"pool": self.pool, "where": "triggerer" if self.hold.deferred else "worker", "seconds": self.hold.hold}
        record = self.ledger.sending(webhook, call.bot_id, slot, self.refusals)
        try:
            result = self.hook.send(call).to_dict()
            if self.report_key is not None:
                result["report_key"] = self.report_key
        except OctoRpaError as err:
            if err.outcome is CallOutcome.NOT_STARTED:
                if getattr(err, "is_rate_limited", False):
                    metrics.count(metrics.RATE_LIMITED, self.conn_id)
                self.refusals.append(_refusal(err))
                self.ledger.refused(record, self.refusals)
                raise
            metrics.count(metrics.UNKNOWN_OUTCOME, self.conn_id)
            self.ledger.unknown(record)
            if self.resend_on_unknown_outcome or isinstance(err, OctoRpaNotAWebhookError):
                raise  # the user chose Airflow retries to resend it; or the error says what to fix itself
            raise unknown_outcome_error(record, "This call", cause=str(err)) from err
        except BaseException:  # execution_timeout or a kill while the request was out
            self.in_flight = record
            metrics.count(metrics.UNKNOWN_OUTCOME, self.conn_id)
            self.ledger.unknown(record)
            raise
        finally:
            self.hold.exchange_ended()
        self.started = result
        metrics.count(metrics.STARTED, self.conn_id)
        self.log.info(
            "Started Octopus RPA run flowProcessNo=%s (flowId=%s) with %d input variable(s).",
            result["flow_process_no"],
            result["flow_id"],
            len(call.params),
        )
        try:
            self.ledger.started(record, result)
        except Exception as err:  # the run started: a failed bookkeeping write must not fail the task
            self.log.warning(
                "Could not record that run flowProcessNo=%s started (%s: %s). The task goes on with it; a "
                "retry of this task would fail as 'may have started' rather than trigger again.",
                result["flow_process_no"],
                type(err).__name__,
                err,
            )
        return result

    def _log_resend(self, state: Any) -> None:
        metrics.count(metrics.RESENT, self.conn_id)
        metrics.slot_hold(state.upcoming_sleep, self.conn_id)  # the refused call's slot is kept too
        self.log.warning(
            "Octopus RPA call not started (%s); sending it again in %.1f s (attempt %d of %d).",
            self._refusal_reason(_failure(state)),
            state.upcoming_sleep,
            state.attempt_number + 1,
            self.rate_limit_retries + 1,
        )

    def _refusal_reason(self, failure: BaseException | None) -> str:
        """What refused the call; for the rate limit, why the budget may have been overdrawn."""
        from airflow_octorpa.pool_facts import pool_slots

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


def unknown_outcome_error(record: CallRecord, who: str, cause: str | None = None) -> OctoRpaUnknownOutcomeError:
    """The error of a call that may have started a run: what to check, and how to trigger again."""
    what = f" ({cause})" if cause is not None else ""
    return OctoRpaUnknownOutcomeError(
        f"{who} sent the Octopus RPA call at {record.sent_at_text} to webhook {record.webhook!r} "
        f"(robot {record.robot or 'chosen on the trigger'}) and got no usable answer{what}. The app MAY HAVE "
        "STARTED. Check the Octopus RPA console for a run at that time. If none started, clear this task "
        "to trigger again; retries will not resend it unless resend_on_unknown_outcome=True, which "
        "risks a second run."
    )


def _refusal(err: OctoRpaError) -> dict[str, Any]:
    """What the run's page shows of a refused attempt: never its body, which may echo the input."""
    return {
        "at": time.time(),
        "status": getattr(err, "status", None),
        "code": getattr(err, "code", None),
        "request_id": getattr(err, "request_id", None),
        "error": type(err).__name__,
    }


def _failure(state: Any) -> BaseException | None:
    """The exception of a tenacity attempt, if it failed."""
    return state.outcome.exception() if state.outcome is not None else None
