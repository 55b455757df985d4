"""``make demo``: the e-commerce example DAGs, end to end, against the bundled webhook emulator.

Starts the emulator on a free loopback port, prepares an embedded Airflow home with SQLite (the
``octorpa_default`` connection, made with Airflow's CLI, and the ``octorpa`` pool, printed by
``octorpa pool`` and imported with ``airflow pools import``: the quick start's own commands), then:

1. ``airflow dags test example_octorpa_order``: one signed call; prints the started run's
   ``flowProcessNo`` and what the emulator received.
2. ``airflow dags test example_octorpa_wait`` with Airflow's own api-server (Airflow 2: the
   webserver) serving the report route on a free loopback port: the emulator's order app reports
   back when its run ends, the waiting task succeeds, and the app's outputs reach the next task.
3. Airflow 3: an inbox (``octorpa inbox create orders``) and a scheduler, triggerer and DAG
   processor beside the api-server; the emulator starts two runs of the order app by its own
   schedule, not through Airflow, and their reports schedule ``example_octorpa_inbox``, whose task
   prints the app's outputs.

Stops everything it started, also when a step fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
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
WAIT_DAG_ID = "example_octorpa_wait"
INBOX_DAG_ID = "example_octorpa_inbox"
INBOX = "orders"
WEBHOOK_ID = "order-processing"
WEBHOOK_SECRET = "demo-order-secret"  # the emulator's built-in demo webhook


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


WEB_PORT = _free_port()
WEB_URL = f"http://127.0.0.1:{WEB_PORT}"


def _airflow_major() -> int:
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


def _airflow_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_HOME=str(AIRFLOW_HOME),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}",
        # Where the emulator's robots report back: the api-server (Airflow 2: webserver) started below.
        AIRFLOW__OCTORPA__CALLBACK_BASE_URL=WEB_URL,
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(WEB_PORT),
        AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
        AIRFLOW__WEBSERVER__WEB_SERVER_HOST="127.0.0.1",
        AIRFLOW__WEBSERVER__WEB_SERVER_PORT=str(WEB_PORT),
    )
    return env


ENV = _airflow_env()  # one JWT secret for every command of the demo


def _run(title: str, command: list[str], stdout_file: Path | None = None) -> None:
    """Run one command, its output (or only its errors, with ``stdout_file``) kept in .demo/logs;
    stop the demo if it fails."""
    log_file = LOGS / f"{title.replace(' ', '-').replace('/', '-')}.log"
    print(f"==> {title}", flush=True)
    with contextlib.ExitStack() as files:
        log = files.enter_context(log_file.open("w", encoding="utf-8"))
        out = files.enter_context(stdout_file.open("w", encoding="utf-8")) if stdout_file else log
        done = subprocess.run(
            command, env=ENV, stdout=out, stderr=log if stdout_file else subprocess.STDOUT, check=False
        )
    if done.returncode != 0:
        print(log_file.read_text(encoding="utf-8")[-4000:], file=sys.stderr)
        raise SystemExit(f"'{title}' failed (exit {done.returncode}); full log: {log_file}")


def _step(title: str, *command: str) -> None:
    _run(title, [str(BIN / "airflow"), *command])


def _start_web_server() -> subprocess.Popen:
    """Airflow's own api-server (Airflow 2: webserver), which serves the provider's report route."""
    if _airflow_major() >= 3:
        command = [str(BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(WEB_PORT)]
        health = f"{WEB_URL}/api/v2/monitor/health"
    else:
        command = [
            str(BIN / "airflow"),
            "webserver",
            "--hostname",
            "127.0.0.1",
            "--port",
            str(WEB_PORT),
            "--workers",
            "1",
        ]
        health = f"{WEB_URL}/health"
    print(f"==> starting Airflow's {command[1]} on {WEB_URL} (it serves the report route)", flush=True)
    server = subprocess.Popen(
        command,
        env=ENV,
        stdout=(LOGS / f"{command[1]}.log").open("w", encoding="utf-8"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"Airflow's {command[1]} stopped; see {LOGS / (command[1] + '.log')}")
        try:
            _get_json(health)
            return server
        except (OSError, ValueError):
            time.sleep(0.5)
    _stop(server)
    raise SystemExit(f"Airflow's {command[1]} did not answer in 180 s; see {LOGS / (command[1] + '.log')}")


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


def _xcom_of_latest_run(task_id: str, dag_id: str = DAG_ID) -> object:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db") as db:
        row = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = ? AND key = 'return_value' AND map_index = -1 "
            "ORDER BY timestamp DESC LIMIT 1",
            (dag_id, task_id),
        ).fetchone()
    if row is None:
        raise SystemExit(f"No XCom was stored for {dag_id}.{task_id}")
    value = json.loads(row[0])
    return json.loads(value) if isinstance(value, str) and value[:1] in '{["' else value


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
        pool_file = DEMO_DIR / "octorpa-pool.json"
        _run("octorpa pool > octorpa-pool.json", [str(BIN / "octorpa"), "pool"], stdout_file=pool_file)
        _step("airflow pools import octorpa-pool.json", "pools", "import", str(pool_file))
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
        print()
        _wait_demo(emulator_url)
    finally:
        _stop(emulator)
        print("==> emulator stopped")
    return 0


def _wait_demo(emulator_url: str) -> None:
    """Start, wait for the app's report, use its outputs downstream."""
    web_server = _start_web_server()
    try:
        _step(f"airflow dags test {WAIT_DAG_ID}", "dags", "test", WAIT_DAG_ID)
        _print_wait_results(emulator_url)
        if _airflow_major() >= 3:
            _inbox_demo(emulator_url)
    finally:
        _stop(web_server)
        print("==> Airflow's web server stopped")


def _wait_log() -> str:
    """What ``airflow dags test`` printed for the wait DAG (kept in .demo/logs)."""
    found = sorted(LOGS.glob(f"*{WAIT_DAG_ID}*.log"))
    return found[-1].read_text(encoding="utf-8", errors="replace") if found else ""


def _print_wait_results(emulator_url: str) -> None:
    report = _xcom_of_latest_run("process_order_wait", WAIT_DAG_ID)
    waybill = _xcom_of_latest_run("ship", WAIT_DAG_ID)
    runs = _get_json(f"{emulator_url}/_emulator/runs")
    reported = [r for run in runs for r in run.get("callback", {}).get("reports", [])]  # type: ignore[union-attr]
    print()
    print(f"The app's run {report['flow_process_no']} reported back: status {report['status']!r}")
    print(f"  waiting task XCom (process_order_wait): {json.dumps(report, ensure_ascii=False)}")
    print(f"  downstream task 'ship' got the app's output 运单号 = {waybill}")
    progress = [line.strip() for line in _wait_log().splitlines() if " progress #" in line]
    print(f"  the wait's log showed the app's progress ({len(progress)} line(s)), e.g.:")
    for line in progress[:3]:
        print(f"    {line[line.index('flowProcessNo=') :].split(' [airflow.')[0]}")  # without the logger's name
    print(
        f"  reports the emulator's apps sent to Airflow: {len(reported)} (one per run the DAG started: "
        f"process_order and the two mapped process_orders), answered HTTP {sorted({r['status_code'] for r in reported})}"
    )
    print()


def _start_component(name: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "airflow"), name],
        env=env,
        stdout=(LOGS / f"{name}.log").open("w", encoding="utf-8"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _query(sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db", timeout=30) as db:
        return db.execute(sql, args).fetchall()


def _wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"Timed out after {timeout:.0f} s waiting for {what}; logs in {LOGS}")
        time.sleep(1)


def _inbox_demo(emulator_url: str) -> None:
    """Runs Airflow did not start schedule a DAG: the emulator's schedule, an inbox, asset events."""
    inbox_out = DEMO_DIR / "inbox-create.txt"
    _run(f"octorpa inbox create {INBOX}", [str(BIN / "octorpa"), "inbox", "create", INBOX], stdout_file=inbox_out)
    (url,) = [word for word in inbox_out.read_text(encoding="utf-8").split() if word.startswith(WEB_URL)]
    env = {
        **ENV,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{WEB_URL}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
    }
    print("==> starting Airflow's scheduler, triggerer and DAG processor (the inbox's watcher runs in the triggerer)")
    components = [_start_component(name, env) for name in ("dag-processor", "scheduler", "triggerer")]
    try:
        _wait_until(
            lambda: _query("SELECT 1 FROM dag WHERE dag_id = ?", INBOX_DAG_ID), 180, f"{INBOX_DAG_ID} to be parsed"
        )
        _step(f"airflow dags unpause {INBOX_DAG_ID}", "dags", "unpause", INBOX_DAG_ID)
        _wait_until(lambda: _query("SELECT 1 FROM asset_watcher"), 180, "the inbox's asset watcher")
        schedule = {"inbox_url": url, "params": {"订单号": "SO-NIGHTLY"}, "count": 2, "every": 2}
        request = urllib.request.Request(
            f"{emulator_url}/_emulator/schedules/{WEBHOOK_ID}", data=json.dumps(schedule).encode(), method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()
        print("==> the emulator starts two runs of the order app by its own schedule; each reports to the inbox")
        _wait_until(lambda: sum(map(len, _inbox_outputs().values())) >= 2, 240, f"the DAG runs of {INBOX_DAG_ID}")
        _print_inbox_results(emulator_url)
    finally:
        for component in components:
            _stop(component, grace=20)
        print("==> Airflow's scheduler, triggerer and DAG processor stopped")


def _inbox_outputs() -> dict[str, list[object]]:
    """Each finished run of the inbox's DAG and the outputs of the reports its task loaded."""
    rows = _query(
        "SELECT r.run_id, x.value FROM dag_run r JOIN xcom x ON x.dag_run_id = r.id AND x.task_id = 'load_orders' "
        "AND x.key = 'return_value' WHERE r.dag_id = ? AND r.state = 'success' ORDER BY r.id",
        INBOX_DAG_ID,
    )
    found = {}
    for run_id, value in rows:
        loaded = json.loads(value)
        found[run_id] = json.loads(loaded) if isinstance(loaded, str) else loaded
    return found


def _print_inbox_results(emulator_url: str) -> None:
    runs = [run for run in _get_json(f"{emulator_url}/_emulator/runs") if run.get("started_by") == "schedule"]  # type: ignore[union-attr]
    print()
    for run in runs:
        answers = [r["status_code"] for r in run.get("callback", {}).get("reports", [])]
        print(
            f"The emulator's schedule started run {run['flow_process_no']}; its report to the inbox was answered {answers}"
        )
    for run_id, loaded in _inbox_outputs().items():
        print(
            f"  DAG run {run_id} of {INBOX_DAG_ID} loaded {len(loaded)} report(s), "
            f"the app's outputs {json.dumps(loaded, ensure_ascii=False)}"
        )
    print()


if __name__ == "__main__":
    sys.exit(main())
