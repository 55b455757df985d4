"""The deferred slot hold: never timed by comparing two clocks, carrying the result back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import pytest

from airflow_octorpa.triggers.octorpa import OctoRpaSlotHoldTrigger, monotonic_clock_id
from tests.support.airflow_cluster import OTHER_CLOCK, can_run_on_other_clock

RESULT = {"flow_process_no": "639086220306619793", "flow_id": "f-1", "enterprise_id": "e-1"}
ON_LINUX = pytest.mark.skipif(sys.platform != "linux", reason="the shared monotonic clock is told apart on Linux")


def _first_event(trigger: OctoRpaSlotHoldTrigger):
    async def first():
        async for event in trigger.run():
            return event

    return asyncio.run(first())


def _restored(trigger: OctoRpaSlotHoldTrigger) -> OctoRpaSlotHoldTrigger:
    """What a triggerer builds from the kwargs stored with the deferral."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_octorpa.triggers.octorpa.OctoRpaSlotHoldTrigger"
    return OctoRpaSlotHoldTrigger(**json.loads(json.dumps(kwargs)))


def test_serializes_the_remaining_duration_the_clock_and_the_result():
    deadline = time.monotonic() + 12.5
    trigger = OctoRpaSlotHoldTrigger.until(deadline, RESULT)
    _, kwargs = trigger.serialize()
    assert kwargs["result"] == RESULT
    assert kwargs["monotonic_deadline"] == deadline
    assert kwargs["clock"] == monotonic_clock_id()
    assert 12.0 < kwargs["hold_seconds"] <= 12.5
    assert _restored(trigger).serialize() == trigger.serialize()


def test_sleeps_the_whole_hold_then_hands_the_result_back():
    started = time.monotonic()
    event = _first_event(OctoRpaSlotHoldTrigger(hold_seconds=0.5, result=RESULT))
    assert time.monotonic() - started >= 0.5
    assert event.payload == {"status": "held", "result": RESULT}


@ON_LINUX
def test_on_the_workers_host_the_hand_off_overlaps_the_hold():
    # The worker called, then deferring and the triggerer's hand-off took 0.6 s of a 1 s hold.
    deadline = time.monotonic() + 1.0
    trigger = _restored(OctoRpaSlotHoldTrigger.until(deadline, RESULT))
    time.sleep(0.6)
    event = _first_event(trigger)
    ended = time.monotonic()
    assert ended >= deadline  # never before the worker's own hold would have ended
    assert ended - deadline < 0.3  # and not the whole second again after the hand-off
    assert event.payload == {"status": "held", "result": RESULT}


def test_a_triggerer_on_another_host_times_the_whole_rest_itself():
    # Another boot's monotonic clock: its deadline says nothing about this one.
    trigger = OctoRpaSlotHoldTrigger(
        hold_seconds=0.5, result=RESULT, clock="another-boot/time:[1]", monotonic_deadline=time.monotonic() - 100
    )
    started = time.monotonic()
    _first_event(trigger)
    assert time.monotonic() - started >= 0.5


def test_a_trigger_deferred_by_an_older_provider_times_the_whole_rest_itself():
    started = time.monotonic()
    _first_event(OctoRpaSlotHoldTrigger(hold_seconds=0.5, result=RESULT))
    assert time.monotonic() - started >= 0.5


@ON_LINUX
def test_a_clock_that_reads_earlier_than_the_deferral_is_not_the_workers():
    # The same name, but the deferral (deadline less the rest) would be 100 s from now here.
    trigger = OctoRpaSlotHoldTrigger(
        hold_seconds=0.5, result=RESULT, clock=monotonic_clock_id(), monotonic_deadline=time.monotonic() + 100.5
    )
    assert not trigger.shares_the_workers_clock()
    started = time.monotonic()
    _first_event(trigger)
    assert 0.5 <= time.monotonic() - started < 5


@ON_LINUX
def test_a_deadline_never_lengthens_past_the_rest_it_was_deferred_with():
    trigger = OctoRpaSlotHoldTrigger(
        hold_seconds=0.3, result=RESULT, clock=monotonic_clock_id(), monotonic_deadline=time.monotonic() + 50
    )
    assert trigger.deadline() <= time.monotonic() + 0.3


@ON_LINUX
def test_a_monotonic_clock_of_the_same_name_that_runs_ahead_does_not_cut_the_hold():
    """Another host can give the same clock name (the initial time namespace's inode is the same
    everywhere; VMs restored from one snapshot share a boot id). Its clock reads 100 s ahead here:
    the worker's deadline looks long past, but the wall clock says 2 s are left."""
    trigger = _restored(
        OctoRpaSlotHoldTrigger(
            hold_seconds=2.0,
            result=RESULT,
            clock=monotonic_clock_id(),
            monotonic_deadline=time.monotonic() - 98.0,
            wall_deadline=time.time() + 2.0,
        )
    )
    assert trigger.shares_the_workers_clock()  # the name matches, and it reads later than the deferral
    assert trigger.deadline() - time.monotonic() > 1.9


def test_a_wall_clock_that_jumps_ahead_does_not_cut_the_hold(monkeypatch):
    # No real clock can be stepped for a test: the wall clock is made to read an hour ahead.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    deadline = time.monotonic() + 0.5
    _first_event(_restored(OctoRpaSlotHoldTrigger.until(deadline, RESULT)))
    assert time.monotonic() >= deadline


_CLOCK = "from airflow_octorpa.triggers.octorpa import monotonic_clock_id; import time, json; " + (
    "print(json.dumps([monotonic_clock_id(), time.monotonic()]))"
)


@ON_LINUX
def test_another_process_on_this_host_reads_the_same_clock():
    assert monotonic_clock_id()
    before = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _CLOCK], capture_output=True, text=True, check=True).stdout
    clock, reading = json.loads(out)
    assert clock == monotonic_clock_id()
    assert before <= reading <= time.monotonic()


@ON_LINUX
@pytest.mark.skipif(not can_run_on_other_clock(), reason="needs unshare --time (Linux 5.6+, root or CAP_SYS_ADMIN)")
def test_a_time_namespace_with_its_own_offset_is_another_clock():
    # A container restored on another host runs in a time namespace whose monotonic clock is
    # offset: the same boot id, another clock, so another name.
    out = subprocess.run(
        [*OTHER_CLOCK, sys.executable, "-c", _CLOCK],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    clock, reading = json.loads(out)
    assert reading > time.monotonic() + 90000
    assert clock != monotonic_clock_id()
    assert clock.split("/")[0] == monotonic_clock_id().split("/")[0]  # same boot
