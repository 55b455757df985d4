"""Running this environment's ``octorpa`` command, and reading what an ``airflow`` or ``octorpa`` command
printed, whatever an Airflow version logs beside it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

OCTORPA = str(Path(sys.executable).with_name("octorpa"))


def octorpa(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``octorpa`` with this process's environment and ``env``."""
    return subprocess.run(
        [OCTORPA, *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
