"""The Waiting page's "Try it locally" block runs as written (ports made free), on a fresh Airflow
home with Airflow's default settings, and says what the page says it says."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "pages" / "waiting.md"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _try_it_block() -> str:
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(r"\*\*Try it locally\*\*.*?```sh\n(.*?)```", text, re.DOTALL)
    assert match, "the Waiting page has no 'Try it locally' block"
    return match.group(1)


def test_the_try_it_locally_block_runs_and_the_app_reports_back(tmp_path):
    web, emulator = _free_port(), _free_port()
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
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the api-server's workers, the emulator
        except ProcessLookupError:
            pass
        _kill_processes_of(home)
    assert process.returncode == 0, output[-4000:]
    assert "is a loopback address" in output
    assert re.search(r"Started Octopus RPA run flowProcessNo=\d+", output), output[-4000:]
    assert re.search(r"Octopus RPA run flowProcessNo=\d+ succeeded \(1 output\(s\)\)", output), output[-4000:]
    assert "SF1000000001" in output


def _kill_processes_of(home: Path) -> None:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"AIRFLOW_HOME={home}".encode() in environ and int(pid) != os.getpid():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
