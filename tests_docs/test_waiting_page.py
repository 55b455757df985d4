"""The Waiting page's "Try it locally" block runs as written (ports made free), on a fresh Airflow
home with Airflow's default settings, and says what the page says it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.airflow_cluster import free_port, kill_processes_of_home, stop_groups

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "pages" / "waiting.md"


def _try_it_block() -> str:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"\*\*Try it locally\*\*.*?```sh\n(.*?)```", text, re.DOTALL)
    assert match, "the Waiting page has no 'Try it locally' block"
    return match.group(1)


def test_the_try_it_locally_block_runs_and_the_app_reports_back(tmp_path):
    web, emulator = free_port(), free_port()
    block = _try_it_block().replace("8080", str(web)).replace("8081", str(emulator))
    home = tmp_path / "airflow-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}", AIRFLOW_HOME=str(home))
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=600)
    process = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        stop_groups([process])  # the api-server's workers, the emulator
        kill_processes_of_home(home)
    assert process.returncode == 0, output[-4000:]
    assert "is a loopback address" in output
    assert re.search(r"Started Octopus RPA run flowProcessNo=\d+", output), output[-4000:]
    assert re.search(r"Octopus RPA run flowProcessNo=\d+ succeeded: 已发货; outputs: 运单号\.", output), output[-4000:]
    assert re.search(r"flowProcessNo=\d+ progress #\d+ at ", output), output[-4000:]  # as the page says
    assert "SF1000000001" in output
