"""Loaded by every Python process that has this folder on its path (``benchmarks/cancel.py`` puts
it on the triggerer's): writes one line per SQL statement that reads a run's report Variables, so
that the bench counts the waits' database reads from outside the provider's code."""

from __future__ import annotations

import os
import time

_OUT = os.environ.get("OCTORPA_BENCH_SQL_LOG")

if _OUT and os.environ.get("OCTORPA_COMPONENT") == "triggerer":
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _note_report_reads(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001, ANN202
        if not statement.lstrip().upper().startswith("SELECT") or "variable" not in statement:
            return
        values = parameters.values() if isinstance(parameters, dict) else (parameters or ())
        keys = [value for value in values if isinstance(value, str) and value.startswith("octorpa_report.")]
        if keys:
            with open(_OUT, "a") as out:
                out.write(f"{time.time()} {keys[0]}\n")
