"""Real Airflow components (api-server, scheduler, dag-processor, triggerer) with the LocalExecutor
and SQLite in a private Airflow home, on free loopback ports; used by tests and ``benchmarks/``.
With ``sql_alchemy_conn`` and ``components`` it runs other deployments too (the CeleryExecutor on
PostgreSQL with several schedulers and workers: ``tests_distributed/``).

Every component runs in its own process group and is stopped with SIGTERM, then SIGKILL after a
grace period (the scheduler may ignore SIGTERM while its workers finish).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
# Airflow 2's scheduler parses the DAGs itself and runs tasks without an API server; its webserver
# serves the UI, the REST API and the provider's report route.
AIRFLOW_2_COMPONENTS = ("webserver", "scheduler", "triggerer")
# The log servers would listen on every interface, on fixed ports; the tests read log files.
NO_LOG_SERVER = ("--skip-serve-logs",)


@dataclass(frozen=True)
class Component:
    """One Airflow process: its name (for logs and :meth:`AirflowCluster.kill`), its ``airflow``
    arguments, the environment it adds and the command it runs under (``unshare ...``), if any."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    launcher: tuple[str, ...] = ()


def component(name: str, launcher: tuple[str, ...] = ()) -> Component:
    """The named component as the LocalExecutor deployment runs it."""
    return Component(name, (name, *NO_LOG_SERVER) if name in ("scheduler", "triggerer") else (name,), launcher=launcher)


# Runs a component with its own monotonic clock, far ahead of the host's, as on another machine.
OTHER_CLOCK = ("unshare", "--time", "--fork", "--monotonic", "100000")


def can_run_on_other_clock() -> bool:
    """Whether ``OTHER_CLOCK`` works here (Linux 5.6+, as root or with CAP_SYS_ADMIN)."""
    try:
        return subprocess.run([*OTHER_CLOCK, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


_GRACE_SECONDS = 15.0


def _airflow_major() -> int:
    from importlib.metadata import version

    return int(version("apache-airflow").split(".")[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowCluster:
    """``with AirflowCluster(home, dags_folder) as cluster: cluster.trigger(...)``."""

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        parallelism: int = 16,
        plugins_folder: Path | None = None,
        sql_alchemy_conn: str | None = None,
        executor: str = "LocalExecutor",
        components: list[Component] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = home
        self.dags_folder = dags_folder
        self.port = free_port()
        self.sql_alchemy_conn = sql_alchemy_conn or f"sqlite:///{home / 'airflow.db'}"
        self.components = components or [
            component(name) for name in (COMPONENTS if _airflow_major() >= 3 else AIRFLOW_2_COMPONENTS)
        ]
        self.airflow = str(Path(sys.executable).with_name("airflow"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_"))}
        self.env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": executor,
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.port}",
                "AIRFLOW__WEBSERVER__BASE_URL": f"http://127.0.0.1:{self.port}",  # Airflow 2's webserver
                "AIRFLOW__WEBSERVER__WEB_SERVER_HOST": "127.0.0.1",
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder or home / "plugins"),
                **(extra_env or {}),
            }
        )
        self.processes: dict[str, subprocess.Popen] = {}

    # -- set-up ---------------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 180) -> str:
        done = subprocess.run(
            [self.airflow, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def octorpa(self, *args: str, timeout: float = 120) -> str:
        """Run this environment's ``octorpa`` command against the cluster's database; what it printed."""
        octorpa = str(Path(sys.executable).with_name("octorpa"))
        done = subprocess.run(
            [octorpa, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"octorpa {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def create_inbox(self, name: str) -> str:
        """``octorpa inbox create``: the inbox's URL, printed once, on this cluster's api-server."""
        printed = self.octorpa("inbox", "create", name)
        (url,) = [word for word in printed.split() if word.startswith(f"http://127.0.0.1:{self.port}/")]
        return url

    def prepare(self, connections: dict[str, dict[str, Any]], pool_size: int = 5) -> None:
        """Migrate the database, create the ``octorpa`` pool and the connections."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("db", "migrate")
        self.cli("pools", "set", "octorpa", str(pool_size), "Octopus RPA webhook calls", "--include-deferred")
        for conn_id, conn in connections.items():
            self.cli("connections", "add", conn_id, "--conn-json", json.dumps(conn))

    def start(self) -> None:
        for component in self.components:
            self.start_component(component)
        if any(component.args[0] in ("api-server", "webserver") for component in self.components):
            self.wait_for(self._api_healthy, 180, "the api-server (Airflow 2: the webserver) to answer")

    def start_component(self, component: Component) -> None:
        logs = self.home / "component-logs"
        logs.mkdir(exist_ok=True)
        args = [*component.launcher, self.airflow, *component.args]
        if component.args[0] == "api-server":
            args += ["--port", str(self.port), "--host", "127.0.0.1"]
        elif component.args[0] == "webserver":
            args += ["--port", str(self.port), "--hostname", "127.0.0.1", "--workers", "1"]
        self.processes[component.name] = subprocess.Popen(
            args,
            env={**self.env, **component.env, "OCTORPA_COMPONENT": component.name},
            stdout=(logs / f"{component.name}.log").open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        """``kill -9`` a component and every process it started (task processes included)."""
        process = self.processes.pop(name)
        _signal_group(process, signal.SIGKILL)
        # This cluster's only: another suite's components on the machine carry the same name.
        for pid in set(pids_whose("environ", f"OCTORPA_COMPONENT={name}")) & set(
            pids_whose("environ", f"AIRFLOW_HOME={self.home}")
        ):
            kill(pid)
        process.wait()

    def stop(self) -> None:
        # Found before the groups go: a task runner's parent is then gone, and its environment too.
        doomed = processes_of_home(self.home, [process.pid for process in self.processes.values()])
        stop_groups(self.processes.values())
        for pid in doomed:
            kill(pid)

    def __enter__(self) -> AirflowCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running DAGs ---------------------------------------------------------------------------

    def wait_for_dags(self, *dag_ids: str, timeout: float = 180) -> None:
        self.wait_for(
            lambda: all(self._query("SELECT 1 FROM dag WHERE dag_id = ?", dag_id) for dag_id in dag_ids),
            timeout,
            f"DAGs {dag_ids} to be parsed",
        )

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> None:
        self.cli("dags", "trigger", dag_id, "--run-id", run_id, "--conf", json.dumps(conf))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Wait until the run ends; return its state."""

        def ended() -> bool:
            rows = self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)
            return bool(rows) and rows[0][0] in ("success", "failed")

        self.wait_for(ended, timeout, f"{dag_id}/{run_id} to end")
        return self._query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", dag_id, run_id)[0][0]

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str]:
        rows = self._query(
            "SELECT task_id, map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ?", dag_id, run_id
        )
        return {(task_id, map_index): state for task_id, map_index, state in rows}

    def xcom_values(self, dag_id: str, run_id: str, task_id: str) -> dict[int, Any]:
        # Airflow 3 on PostgreSQL keeps XComs as JSONB, which psycopg2 decodes: ask for the JSON text.
        value = "value::text" if self.sql_alchemy_conn.startswith("postgresql") and _airflow_major() >= 3 else "value"
        rows = self._query(
            f"SELECT map_index, {value} FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'",
            dag_id,
            run_id,
            task_id,
        )
        return {map_index: _xcom_value(value) for map_index, value in rows}

    def log_tail(self, chars: int = 4000) -> str:
        """The end of each component's log, then of the last task tries' (a failed try says why there)."""
        components = sorted((self.home / "component-logs").glob("*.log"))
        tries = sorted((self.home / "logs").glob("dag_id=*/**/*.log"), key=lambda p: p.stat().st_mtime)[-8:]
        return "\n".join(
            f"--- {p.relative_to(self.home)}\n{p.read_text(errors='replace')[-chars:]}" for p in components + tries
        )

    # -- helpers --------------------------------------------------------------------------------

    def _query(self, sql: str, *args: Any) -> list[tuple]:
        """Run a read-only query (``?`` placeholders) on the metadata database."""
        if self.sql_alchemy_conn.startswith("postgresql"):
            import psycopg2

            dsn = self.sql_alchemy_conn.replace("postgresql+psycopg2://", "postgresql://")
            try:
                with psycopg2.connect(dsn) as db, db.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), args)
                    return cursor.fetchall()
            except psycopg2.Error:
                return []  # not yet created: ask again
        try:
            with sqlite3.connect(f"file:{self.home / 'airflow.db'}?mode=ro", uri=True, timeout=10) as db:
                return db.execute(sql, args).fetchall()
        except sqlite3.OperationalError:
            return []  # locked or not yet created: ask again

    def _api_healthy(self) -> bool:
        try:
            path = "/api/v2/monitor/health" if _airflow_major() >= 3 else "/health"
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def wait_for(self, condition: Any, timeout: float, what: str) -> None:
        """Poll ``condition`` until true; fail early, with the components' logs, if one has died."""
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [name for name, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                reason = f"{dead} exited" if dead else f"timed out after {timeout:.0f} s"
                raise TimeoutError(f"Waiting for {what}: {reason}.\n{self.log_tail()}")
            time.sleep(0.5)


def _xcom_value(stored: Any) -> Any:
    # XComs are stored as JSON; SQLite hands numbers back as numbers, and Airflow 2 keeps them in a
    # binary column (bytes from SQLite, a memoryview from PostgreSQL).
    if isinstance(stored, memoryview):
        stored = stored.tobytes()
    return json.loads(stored) if isinstance(stored, (str, bytes)) else stored


def pids_whose(proc_file: str, text: str) -> list[int]:
    """Processes whose ``/proc/<pid>/<proc_file>`` (``cmdline``, ``environ``) holds ``text`` as one
    of its NUL-separated entries, or inside one for ``cmdline``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            entries = Path(f"/proc/{pid}/{proc_file}").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if text in entries or (proc_file == "cmdline" and text in " ".join(entries)):
            found.append(int(pid))
    return found


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_groups(processes: Iterable[subprocess.Popen]) -> None:
    """SIGTERM each process's group, then SIGKILL it after the grace period (the scheduler may
    ignore SIGTERM while its workers finish); the group holds LocalExecutor workers and task
    processes too."""
    processes = list(processes)
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + _GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for process in processes:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def kill_processes_of_home(home: Path) -> None:
    """Kill what left its group (task supervisors start sessions of their own)."""
    for pid in processes_of_home(home):
        kill(pid)


def processes_of_home(home: Path, roots: Iterable[int] = ()) -> set[int]:
    """Every process whose environment names this private AIRFLOW_HOME, or that descends from one
    of them or of ``roots``: Airflow 3's task runner sets its process title over its environment,
    so only its lineage names it (this process excluded)."""
    children: dict[int, list[int]] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])  # after "(comm)": state, then ppid
        children.setdefault(parent, []).append(int(pid))
    pending = [*pids_whose("environ", f"AIRFLOW_HOME={home}"), *roots]
    found: set[int] = set()
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children.get(pid, []))
    found.discard(os.getpid())
    return found


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
