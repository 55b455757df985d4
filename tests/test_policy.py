"""The operator's policy objects on their own: the slot hold (its timing, where it is kept) and the
webhook call (send, record, resend only what started nothing), against the emulator and canned
servers, with the ledger on an in-memory store."""

from __future__ import annotations

import json
import logging
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowTaskTimeout

from airflow_octorpa.call_record import REFUSED, STARTED, UNKNOWN, CallLedger
from airflow_octorpa.exceptions import OctoRpaTryLaterError, OctoRpaUnknownOutcomeError
from airflow_octorpa.hooks.octorpa import OctoRpaHook
from airflow_octorpa.policy.slot_hold import MIN_DEFERRAL_SECONDS, SlotHold, where_to_hold
from airflow_octorpa.policy.webhook_call import MAX_RESEND_WAIT_SECONDS, WebhookCall
from tests.support.airflow_helpers import MemoryRecords
from tests.support.canned_server import CannedAnswer, canned_server
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK, connection_json

LOG = logging.getLogger("test_policy")


# -- the slot hold --------------------------------------------------------------------------------


def test_a_hold_runs_from_the_end_of_the_last_exchange():
    hold = SlotHold(0.4, "c", LOG)
    assert hold.remaining() == 0.0  # no exchange yet: nothing to keep
    hold.exchange_ended()
    assert 0.3 < hold.remaining() <= 0.4
    began = time.monotonic()
    hold.wait_out()
    assert time.monotonic() - began >= 0.3 and hold.remaining() == 0.0


def test_a_resend_waits_for_the_hold_or_the_retry_after_whichever_is_later():
    hold = SlotHold(0.5, "c", LOG)
    hold.exchange_ended()

    class Refused(Exception):
        retry_after = 3.0

    assert 2.5 < hold.seconds_before_resend(Refused()) <= 3.0
    assert 0.0 < hold.seconds_before_resend(None) <= 0.5


def test_a_timeout_during_the_hold_is_raised_only_once_the_hold_is_kept_in_full(monkeypatch):
    hold = SlotHold(0.3, "c", LOG)
    hold.exchange_ended()
    real_sleep, fired = time.sleep, []

    def sleep_then_time_out(seconds):
        real_sleep(seconds / 2)
        if not fired:
            fired.append(True)
            raise AirflowTaskTimeout("execution_timeout")

    monkeypatch.setattr(time, "sleep", sleep_then_time_out)  # the timeout's signal, at a known moment
    with pytest.raises(AirflowTaskTimeout):
        hold.wait_out()
    assert hold.remaining() == 0.0


def test_only_long_holds_go_to_the_triggerer_and_only_where_the_pool_counts_deferred_tasks(caplog):
    assert where_to_hold(True, False, "octorpa", True, LOG) is True
    assert where_to_hold(False, False, "octorpa", True, LOG) is False
    with caplog.at_level(logging.INFO, "test_policy"):
        assert where_to_hold(True, True, "octorpa", True, LOG) is False  # Airflow 2 with execution_timeout
        assert where_to_hold(True, False, "octorpa", False, LOG) is False
        assert where_to_hold(True, False, "octorpa", None, LOG) is False
    said = caplog.text
    assert "execution_timeout" in said and "does not count deferred tasks" in said and "cannot be told" in said
    assert said.count("--include-deferred") == 2  # each refusal to defer names the fix

    short = SlotHold(MIN_DEFERRAL_SECONDS - 1, "c", LOG, deferred=True)
    short.exchange_ended()
    assert not short.goes_to_triggerer() and short.in_worker_at_most == MIN_DEFERRAL_SECONDS - 1
    long = SlotHold(60.0, "c", LOG, deferred=True)
    long.exchange_ended()
    assert long.goes_to_triggerer() and long.in_worker_at_most == MIN_DEFERRAL_SECONDS
    assert SlotHold(60.0, "c", LOG).in_worker_at_most == 60.0


# -- the webhook call -----------------------------------------------------------------------------


def _call(monkeypatch, url: str, *, retries: int = 3, resend_unknown: bool = False, rate_limits: str = "100/second"):
    monkeypatch.setenv("AIRFLOW_CONN_OCTORPA_POLICY", connection_json(url, ORDER_SECRET, rate_limits=rate_limits))
    hook = OctoRpaHook("octorpa_policy")
    store = MemoryRecords()
    ledger = CallLedger(store, 1, LOG)
    hold = SlotHold(hook.config.hold, "octorpa_policy", LOG)
    call = WebhookCall(
        hook,
        ledger,
        hold,
        pool="octorpa",
        rate_limit_retries=retries,
        resend_on_unknown_outcome=resend_unknown,
        log=LOG,
    )
    return call, hook, store


def test_a_started_call_is_recorded_with_its_run_and_its_report_key(emulator, monkeypatch):
    call, hook, store = _call(monkeypatch, emulator.webhook_url(ORDER_WEBHOOK))
    call.report_key = "octorpa_report.abc"
    result = call.send_until_accepted(hook.prepare({"order": "A-1"}))
    assert result["flow_process_no"] and result["report_key"] == "octorpa_report.abc"
    assert call.started == result and call.in_flight is None
    assert store.value["state"] == STARTED and store.value["result"]["flow_process_no"] == result["flow_process_no"]
    assert len(emulator.state.snapshot("runs")) == 1


def test_a_rate_limited_call_is_resent_after_the_hold_and_starts_once(emulator, monkeypatch, caplog):
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "rate_limit"}])
    call, hook, store = _call(monkeypatch, emulator.webhook_url(ORDER_WEBHOOK))
    with caplog.at_level(logging.WARNING, "test_policy"):
        result = call.send_until_accepted(hook.prepare({"order": "A-2"}))
    assert result["flow_process_no"] and len(emulator.state.snapshot("runs")) == 1
    assert "refused for the account's rate limit" in caplog.text and "attempt 2 of 4" in caplog.text
    assert "100/second" in caplog.text  # the connection's limits, not the vendor's defaults


def test_a_refusal_past_the_resend_budget_fails_as_try_later_having_started_nothing(monkeypatch):
    answer = CannedAnswer(status=429, body=json.dumps({"code": "RateLimited"}).encode(), headers={"Retry-After": "600"})
    with canned_server(answer) as url:
        call, hook, store = _call(monkeypatch, url)
        with pytest.raises(OctoRpaTryLaterError, match=f"more than {MAX_RESEND_WAIT_SECONDS:g} s"):
            call.send_until_accepted(hook.prepare({}))
    assert len(answer.requests) == 1 and call.started is None
    # Kept as refused, with what the run's page shows of it; a retry reads it as nothing sent.
    assert store.value["state"] == REFUSED and store.value["answered_at"] >= store.value["sent_at"]
    assert [(r["status"], r["code"]) for r in store.value["refusals"]] == [(429, "RateLimited")]
    assert CallLedger(store, store.value["generation"], LOG).prior() is None


def test_a_call_resent_after_a_refusal_keeps_the_refusal_and_where_its_slot_was_held(emulator, monkeypatch):
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "rate_limit"}])
    call, hook, store = _call(monkeypatch, emulator.webhook_url(ORDER_WEBHOOK))
    result = call.send_until_accepted(hook.prepare({"order": "A-3"}))
    assert store.value["state"] == STARTED and store.value["result"] == result
    refusals = store.value["refusals"]
    assert len(refusals) == 1 and refusals[0]["status"] == 429 and len(refusals[0]["request_id"]) == 32
    assert store.value["slot"] == {"pool": "octorpa", "where": "worker", "seconds": call.hold.hold}
    assert store.value["answered_at"] >= store.value["sent_at"] >= refusals[0]["at"]


def test_a_resend_that_would_not_fit_the_deadline_is_not_sent(monkeypatch):
    answer = CannedAnswer(status=429, body=b'{"code": "RateLimited"}', headers={"Retry-After": "30"})
    with canned_server(answer) as url:
        call, hook, _ = _call(monkeypatch, url)
        with pytest.raises(OctoRpaTryLaterError, match="would not fit in execution_timeout"):
            call.send_until_accepted(hook.prepare({}), deadline=time.monotonic() + 10, attempt_seconds=5)
    assert len(answer.requests) == 1


def test_a_lost_answer_is_recorded_unknown_and_never_resent(monkeypatch):
    answer = CannedAnswer(status=502, body=b"<html>bad gateway</html>", content_type="text/html")
    with canned_server(answer) as url:
        call, hook, store = _call(monkeypatch, url)
        with pytest.raises(OctoRpaUnknownOutcomeError, match="MAY HAVE STARTED"):
            call.send_until_accepted(hook.prepare({}))
    assert len(answer.requests) == 1 and store.value["state"] == UNKNOWN and call.started is None


def test_with_resend_on_unknown_outcome_the_error_is_left_to_airflows_retries(monkeypatch):
    answer = CannedAnswer(status=502, body=b"<html>bad gateway</html>", content_type="text/html")
    with canned_server(answer) as url:
        call, hook, store = _call(monkeypatch, url, resend_unknown=True)
        with pytest.raises(Exception) as raised:
            call.send_until_accepted(hook.prepare({}))
    assert not isinstance(raised.value, OctoRpaUnknownOutcomeError)  # the webhook's own error, for a retry
    assert len(answer.requests) == 1 and store.value["state"] == UNKNOWN
