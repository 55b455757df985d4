"""``make demo``: the e-commerce example DAG, end to end, against the bundled webhook emulator.

Starts the emulator on a free loopback port, prepares an embedded Airflow home with SQLite (the
``octorpa_default`` connection and the ``octorpa`` pool, made with Airflow's own CLI), runs
``airflow dags test example_octorpa_order``, prints the started run's ``flowProcessNo`` and what
the emulator received, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
AIRFLOW_HOME = DEMO_DIR / "airflow-home"
LOGS = DEMO_DIR / "logs"
BIN = Path(sys.executable).parent
DAG_ID = "example_octorpa_order"
WEBHOOK_ID = "order-processing"
WEBHOOK_SECRET = "demo-order-secret"  # the emulator's built-in demo webhook


def _airflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_HOME=str(AIRFLOW_HOME),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
    )
    return env


def _step(title: str, *command: str) -> None:
    """Run one ``airflow`` command, its output kept in .demo/logs; stop the demo if it fails."""
    log_file = LOGS / f"{title.replace(' ', '-')}.log"
    print(f"==> {title}", flush=True)
    with log_file.open("w", encoding="utf-8") as log:
        done = subprocess.run(
            [str(BIN / "airflow"), *command], env=_airflow_env(), stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        print(log_file.read_text(encoding="utf-8")[-4000:], file=sys.stderr)
        raise SystemExit(f"'{title}' failed (exit {done.returncode}); full log: {log_file}")


def _start_emulator() -> tuple[subprocess.Popen, str]:
    port_file = DEMO_DIR / "emulator.port"
    emulator = subprocess.Popen(
        [sys.executable, "-m", "airflow_octorpa.emulator", "--port-file", str(port_file)],
        stdout=(LOGS / "emulator.log").open("w", encoding="utf-8"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so it can be stopped whole
    )
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if emulator.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"The emulator did not start; see {LOGS / 'emulator.log'}")
        time.sleep(0.1)
    return emulator, f"http://127.0.0.1:{port_file.read_text().strip()}"


def _stop(process: subprocess.Popen, grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.loads(answer.read().decode("utf-8"))


def _xcom_of_latest_run(task_id: str) -> object:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' ORDER BY timestamp DESC LIMIT 1",
            (DAG_ID, task_id),
        ).fetchone()
    if row is None:
        raise SystemExit(f"No XCom was stored for {DAG_ID}.{task_id}")
    return json.loads(row[0])


def main() -> int:
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    LOGS.mkdir(parents=True)
    AIRFLOW_HOME.mkdir(parents=True)
    print(f"==> starting the Octopus RPA webhook emulator (logs in {LOGS})", flush=True)
    emulator, emulator_url = _start_emulator()
    try:
        webhook_url = f"{emulator_url}/api/v1/bots/webhooks/{WEBHOOK_ID}/invoke"
        print(f"    serving {webhook_url}")
        _step("airflow db migrate", "db", "migrate")
        _step(
            "create connection octorpa_default",
            "connections",
            "add",
            "octorpa_default",
            "--conn-json",
            json.dumps({"conn_type": "octorpa", "host": webhook_url, "password": WEBHOOK_SECRET}),
        )
        _step("import the octorpa pool", "pools", "import", str(REPO / "pools" / "octorpa.json"))
        _step(f"airflow dags test {DAG_ID}", "dags", "test", DAG_ID)

        result = _xcom_of_latest_run("process_order")
        (call,) = _get_json(f"{emulator_url}/_emulator/calls")
        (run,) = _get_json(f"{emulator_url}/_emulator/runs")
        if result["flow_process_no"] != run["flow_process_no"]:
            raise SystemExit(f"XCom {result} does not match the emulator's run {run['flow_process_no']}")
        print()
        print(f"Started Octopus RPA run: flowProcessNo = {result['flow_process_no']}")
        print(f"  task XCom (process_order): {json.dumps(result, ensure_ascii=False)}")
        print(
            f"  the emulator received: HTTP {call['status']}, fields {call['field_names']}, signed={call['signed']}, "
            f"timestamp={call['timestamp']}"
        )
        print(f"  params: {json.dumps(call['params'], ensure_ascii=False)}")
        print(
            f"  app {run['app']!r} started on robot {run['robot']!r} with inputs {json.dumps(run['inputs'], ensure_ascii=False)}"
        )
    finally:
        _stop(emulator)
        print("==> emulator stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
