"""Reading what an ``airflow`` or ``octorpa`` command printed, whatever an Airflow version logs beside it."""

from __future__ import annotations

import json
from typing import Any


def json_output(stdout: str) -> Any:
    """The JSON list or object a command printed, among the log lines some Airflow versions print
    on standard output too (Airflow 3.0's CLI, for one)."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(stdout) if char in "[{" and (i == 0 or stdout[i - 1] == "\n")):
        try:
            value, end = decoder.raw_decode(stdout, start)
        except ValueError:
            continue
        if stdout[end:].strip() == "" or stdout[end] == "\n":
            return value
    raise AssertionError(f"no JSON in the output: {stdout[-2000:]}")
