"""PostgreSQL and Redis for the suites that need them (the distributed suite, Airflow 2's real
components), and the browser for the UI suite: installed from Debian's packages where missing;
the servers are started on free loopback ports in a temporary folder, stopped whatever happens.

Neither runs as root: run by root, each runs as the user its Debian package creates (``postgres``,
``redis``), in a folder of its own under the system's temporary folder that only that user owns.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.airflow_cluster import free_port

_GRACE_SECONDS = 10.0


def ensure_installed(packages: dict[str, str]) -> str | None:
    """Install the Debian package of each missing program (``{program: package}``); return why
    that is impossible, or None when every program is there."""
    missing = {program: package for program, package in packages.items() if not _find_program(program)}
    if not missing:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return f"{sorted(missing)} missing and not installable here: apt-get install {' '.join(missing.values())}"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Suites of two Airflow versions may install at once (make test-compat): one apt-get at a time.
    with open(os.path.join(tempfile.gettempdir(), "octorpa-apt-get.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = {program: package for program, package in missing.items() if not _find_program(program)}
        commands = (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *sorted(set(missing.values()))])
        for command in commands if missing else ():
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=900)
            if done.returncode != 0:
                return f"{' '.join(command)} failed: {done.stderr[-2000:]}"
    still = [program for program in missing if not _find_program(program)]
    return f"{still} still missing after apt-get install" if still else None


def _find_program(program: str) -> str | None:
    """A program on PATH, or in PostgreSQL's versioned folder (Debian keeps initdb there); an
    absolute path (a font, say) is looked for as it is."""
    if os.path.isabs(program):
        return program if os.path.exists(program) else None
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))
    return candidates[-1] if candidates else None


def _as_unprivileged(user: str, folder: Path) -> list[str]:
    """The command prefix that runs a server as ``user`` when the suite runs as root (and gives it
    ``folder`` and what is in it); nothing otherwise."""
    if os.geteuid() != 0:
        return []
    import pwd

    try:
        pwd.getpwnam(user)
    except KeyError:  # a server not installed from Debian's package: any unprivileged user will do
        user = "nobody"
    for path in (folder, *folder.rglob("*")):
        shutil.chown(path, user)
    return ["runuser", "-u", user, "--"]


class _Server:
    process: subprocess.Popen | None = None
    folder: Path

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=_GRACE_SECONDS)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.process = None


class PostgresServer(_Server):
    """``with PostgresServer(folder) as pg: pg.url``: a throwaway cluster with a database ``airflow``."""

    def __init__(self) -> None:
        # A folder of its own under the system's temporary folder: the unprivileged user that runs
        # PostgreSQL must be able to reach it.
        self.folder = Path(tempfile.mkdtemp(prefix="octorpa-postgres-"))
        self.port = free_port()
        self.user = "airflow"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/airflow"

    def __enter__(self) -> PostgresServer:
        data, sockets = self.folder / "pgdata", self.folder / "pgsock"
        for path in (data, sockets):
            path.mkdir(parents=True)
        as_owner = _as_unprivileged("postgres", self.folder)
        initdb = [
            *as_owner,
            _find_program("initdb"),
            "-D",
            str(data),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "-N",
        ]
        done = subprocess.run(initdb, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}")
        log = (self.folder / "postgres.log").open("w")
        self.process = subprocess.Popen(
            [
                *as_owner,
                _find_program("postgres"),
                "-D", str(data),
                "-p", str(self.port),
                "-k", str(sockets),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "max_connections=300",
                "-c", "fsync=off",
                "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait_for_port(self.port, "PostgreSQL", self.process)
        self._create_database()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _create_database(self) -> None:
        import psycopg2

        deadline = time.monotonic() + 60
        while True:
            try:
                db = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        db.autocommit = True
        with db.cursor() as cursor:
            cursor.execute("CREATE DATABASE airflow")
        db.close()


class RedisServer(_Server):
    """``with RedisServer(folder) as redis: redis.url``: a Redis with nothing saved to disk."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="octorpa-redis-"))
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisServer:
        as_owner = _as_unprivileged("redis", self.folder)
        self.process = subprocess.Popen(
            [
                *as_owner,
                _find_program("redis-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.folder),
            ],
            stdout=(self.folder / "redis.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        _wait_for_port(self.port, "Redis", self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def _wait_for_port(port: int, what: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")
