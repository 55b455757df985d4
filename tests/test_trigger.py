"""The deferred slot hold: a duration on the triggerer's own clock, carrying the result back."""

from __future__ import annotations

import asyncio
import time

from airflow_octorpa.triggers.octorpa import OctoRpaSlotHoldTrigger

RESULT = {"flow_process_no": "639086220306619793", "flow_id": "f-1", "enterprise_id": "e-1"}


def _first_event(trigger: OctoRpaSlotHoldTrigger):
    async def first():
        async for event in trigger.run():
            return event

    return asyncio.run(first())


def test_serializes_the_remaining_duration_and_the_result():
    classpath, kwargs = OctoRpaSlotHoldTrigger(hold_seconds=12.5, result=RESULT).serialize()
    assert classpath == "airflow_octorpa.triggers.octorpa.OctoRpaSlotHoldTrigger"
    assert kwargs == {"hold_seconds": 12.5, "result": RESULT}
    # What a restarted triggerer builds from the stored kwargs holds for the whole duration again.
    assert OctoRpaSlotHoldTrigger(**kwargs).hold_seconds == 12.5


def test_sleeps_the_whole_hold_then_hands_the_result_back():
    started = time.monotonic()
    event = _first_event(OctoRpaSlotHoldTrigger(hold_seconds=0.5, result=RESULT))
    assert time.monotonic() - started >= 0.5
    assert event.payload == {"status": "held", "result": RESULT}


def test_a_wall_clock_that_jumps_ahead_does_not_cut_the_hold(monkeypatch):
    # No real clock can be stepped for a test: the wall clock is made to read an hour ahead.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    started = time.monotonic()
    _first_event(OctoRpaSlotHoldTrigger(hold_seconds=0.5, result=RESULT))
    assert time.monotonic() - started >= 0.5
