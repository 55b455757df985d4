"""What a run says while it runs, and what the route answers it: progress, and the cancel.

An app may report ``running`` with a message and a progress (0 to 1), or just ask, as often as it
likes; every answer says whether Airflow has asked it to stop. The record keeps the latest progress
and a bounded history. Bursts are coalesced: a progress report within ``COALESCE_SECONDS`` of the
record's last progress write is held in this process and written when the second is up (only the
latest held one), so an app in a tight loop writes about once a second per api-server worker.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from airflow_octorpa import storage
from airflow_octorpa.callbacks.reports import EXPIRED, WAITING, ReportKey, RouteAnswer, heard, read_owned

log = logging.getLogger(__name__)

COALESCE_SECONDS = 1.0
MAX_HISTORY = 20


@dataclass(frozen=True)
class Progress:
    """One progress report: the app's message, how far it is (0 to 1, or None), when it came."""

    message: str
    progress: float | None
    at: float

    def entry(self, seq: int) -> dict[str, Any]:
        return {"seq": seq, "at": self.at, "message": self.message, "progress": self.progress}


def with_progress(stored: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The record's change that keeps ``progress``: the latest, and the history's newest."""
    seq = int((stored.get("progress") or {}).get("seq", 0)) + 1
    entry = progress.entry(seq)
    history = [*(stored.get("history") or []), entry][-MAX_HISTORY:]
    return {"progress": entry, "history": history, "progress_written_at": time.time()}


def progress_lines(stored: dict[str, Any], after_seq: int = 0) -> list[tuple[int, str]]:
    """The record's progress reports after ``after_seq``, oldest first, as log lines:
    ``progress #3 at 12:00:05 UTC: 40% 第 3 步``."""
    lines = []
    for entry in stored.get("history") or []:
        seq = int(entry.get("seq", 0))
        if seq <= after_seq:
            continue
        when = time.strftime("%H:%M:%S UTC", time.gmtime(float(entry.get("at") or 0)))
        share = entry.get("progress")
        done = f"{share:.0%} " if isinstance(share, (int, float)) else ""
        lines.append((seq, f"progress #{seq} at {when}: {done}{entry.get('message') or '(no message)'}"))
    return lines


def log_progress(logger: Any, flow: str, stored: dict[str, Any], after_seq: int = 0) -> int:
    """Log the record's progress reports after ``after_seq`` (the trigger's and the task's log
    lines are the same); the number of the last one logged, ``after_seq`` when none."""
    for seq, line in progress_lines(stored, after_seq):
        logger.info("flowProcessNo=%s %s", flow, line)
        after_seq = seq
    return after_seq


def record_progress(key: ReportKey, progress: Progress | None, session: Any, held: bool = False) -> RouteAnswer:
    """Keep ``progress`` (None: the app only asks) and answer whether to cancel. A progress report
    after the final report is refused (409); one to a wait that has ended is answered, not kept."""
    for _ in range(3):  # a lost race is re-read
        found = read_owned(session, key)
        if isinstance(found, RouteAnswer):
            return found
        raw, stored, cancel = found
        status = stored.get("status")
        if progress is not None and status not in (WAITING, EXPIRED):
            return RouteAnswer(
                409,
                {"accepted": False, "cancel": cancel,
                 "error": f"This run already reported {status!r}; progress after the final report is not accepted."},
            )  # fmt: skip
        changes = heard(stored, cancel)
        if progress is not None and status == WAITING:
            since = time.time() - float(stored.get("progress_written_at") or 0)
            if since < COALESCE_SECONDS and not changes and not held:
                _hold(key, progress, COALESCE_SECONDS - since)
                return RouteAnswer(200, {"accepted": True, "cancel": cancel})
            changes.update(with_progress(stored, progress))
        if changes and not storage.replace_if_unchanged(session, key.variable, raw, {**stored, **changes}):
            session.rollback()
            continue
        session.commit()
        return RouteAnswer(200, {"accepted": True, "cancel": cancel})
    return RouteAnswer(409, {"accepted": False, "error": "Another report changed this call at the same time."})


# -- coalescing: the latest progress of each call, held until its second is up ----------------

_held: dict[str, tuple[ReportKey, Progress]] = {}
_held_lock = threading.Lock()


def _hold(key: ReportKey, progress: Progress, delay: float) -> None:
    with _held_lock:
        waiting = key.variable in _held
        _held[key.variable] = (key, progress)  # only the latest is written
    if not waiting:
        timer = threading.Timer(max(0.05, delay), _flush, args=(key.variable,))
        timer.daemon = True
        timer.start()


def _flush(variable: str) -> None:
    from airflow.utils.session import create_session

    with _held_lock:
        key, progress = _held.pop(variable, (None, None))
    if key is None or progress is None:
        return
    try:
        with create_session() as session:
            record_progress(key, progress, session, held=True)
    except Exception:  # noqa: BLE001 - a progress line is not worth a crash; the next one writes
        log.warning("Could not keep a held Octopus RPA progress report.", exc_info=True)
