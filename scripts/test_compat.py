"""``make test-compat``: the version-independent part of the suite on every supported Airflow.

Each version gets its own virtual environment, ``.venv-af<version>``, pinned by the project's
``constraints/airflow-<version>.txt`` (Airflow's published constraint files are not reachable
from CI). Airflow 3.3.2 is the main ``.venv``, pinned by ``constraints/airflow-3.3.2.txt``, so its
``.venv-af3.3.2`` is a link to it. Prints one line per version:

    compat: airflow=<version> passed=<n> failed=<n>

``--freeze VERSION`` re-resolves a version's environment with pip and rewrites its constraints.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VERSIONS = ("2.11.2", "3.0.6", "3.1.8", "3.2.2", "3.3.2")
MAIN_VERSION = "3.3.2"  # the main .venv's
# What pip must not pick for a version, found by running it: with newer ones the task runner's calls
# fail (FastAPI, cadwyn: 422 answers on 3.0, a pydantic schema error on 3.2; svcs 26: 3.2's in-process
# API never gets its service registry) and 3.0's api-server
# cannot sign a token without an issuer (PyJWT).
EXTRA_PINS = {
    "3.0.6": ["fastapi<0.132", "cadwyn<9", "PyJWT<2.11"],
    "3.2.2": ["fastapi<0.137", "cadwyn<9", "svcs<26"],
}
# Hook, operator through dag.test(), faults, example DAGs, registration, bad input, callbacks, the
# real-components burst and the killed task process. Tests that need one version's feature skip
# themselves elsewhere. The dag.test() suites of all versions run at once (each uses about half a core:
# they mostly wait out slot holds and CLI processes); then the real-components tests (SCHEDULER_TESTS)
# of two versions at a time (each uses about one core; their assertions are lower bounds on the gaps
# between calls, which a slower machine only widens).
TESTS = (
    "tests/test_signing.py",
    "tests/test_hook.py",
    "tests/test_operator.py",
    "tests/test_exactly_once.py",
    "tests/test_call_record.py",
    "tests/test_rate_limit.py",
    "tests/test_trigger.py",
    "tests/test_example_dags.py",
    "tests/test_provider.py",
    "tests/test_cli.py",
    "tests/test_secrets.py",
    "tests/test_callbacks.py",
    "tests/test_run_records.py",
    "tests/test_policy.py",
    "tests/test_progress_cancel.py",
    "tests/test_inbox.py",
)
# Through real components: the burst (the rate-limit proof), a triggerer on another clock, a task
# process killed after its call, and a run reporting to the api-server (Airflow 2: the webserver).
# The scheduler tests' others run in `make test` on 3.3.
SCHEDULER_TESTS = (
    "tests/test_scheduler.py::test_an_inbox_schedules_each_report_once_in_order_across_a_killed_triggerer",
    "tests/test_scheduler.py::test_burst_from_two_dags_is_delivered_once_each_and_never_refused",
    "tests/test_scheduler.py::test_a_triggerer_on_another_clock_times_each_hold_itself",
    "tests/test_scheduler.py::test_worker_killed_after_its_call_is_not_triggered_twice_but_a_clear_is",
    "tests/test_scheduler.py::test_a_run_reports_to_the_api_server_and_the_waiting_task_gets_its_outputs",
    "tests/test_scheduler.py::test_a_user_marking_a_deferred_wait_failed_asks_the_run_to_stop_and_the_app_hears_it",
    "tests/test_scheduler.py::test_a_user_marking_a_reschedule_wait_failed_asks_the_run_to_stop",
    "tests/test_scheduler.py::test_mapped_waits_hold_no_rate_limit_slot_and_bad_reports_change_nothing",
    "tests_distributed/test_report_path_postgres.py",  # runs on 3.2 (3.3: make test-distributed)
)
EXTRAS = "test"
_EDITABLE_BUILD = threading.Lock()


def venv_path(version: str) -> Path:
    return REPO / f".venv-af{version}"


def constraints(version: str) -> Path:
    return REPO / "constraints" / f"airflow-{version}.txt"


def ensure_venv(version: str) -> Path:
    """The version's environment, (re)built when missing or older than its constraints."""
    venv = venv_path(version)
    if version == MAIN_VERSION:
        main = REPO / ".venv"
        if not (main / ".installed").exists():
            subprocess.run(["make", "-C", str(REPO), "venv"], check=True)
        if not venv.is_symlink():
            shutil.rmtree(venv, ignore_errors=True)
            venv.symlink_to(main.name)
        return venv
    marker = venv / ".installed"
    inputs = (constraints(version), REPO / "pyproject.toml")
    if marker.exists() and all(marker.stat().st_mtime >= path.stat().st_mtime for path in inputs):
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    python = venv / "bin" / "python"
    pin = ["--constraint", str(constraints(version))]
    log = REPO / f".venv-af{version}.log"
    with log.open("w") as out:

        def run(*args: str) -> None:
            if subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                raise SystemExit(f"compat: could not install Airflow {version}; see {log}")

        run(sys.executable, "-m", "venv", str(venv))
        run(str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip")
        run(str(python), "-m", "pip", "install", "--quiet", *pin, f"apache-airflow=={version}")
        with _EDITABLE_BUILD:  # one at a time: every editable install writes the same egg-info folder
            run(str(python), "-m", "pip", "install", "--quiet", *pin, "--editable", f"{REPO}[{EXTRAS}]")
    marker.touch()
    return venv


def run_suite(version: str, tests: tuple[str, ...], extra_args: list[str]) -> tuple[int, int, int]:
    """Run ``tests`` in the version's environment; (passed, failed, skipped)."""
    python = venv_path(version) / "bin" / "python"
    with tempfile.TemporaryDirectory(prefix=f"octorpa-compat-{version}-") as tmp:
        report = Path(tmp) / "junit.xml"
        subprocess.run(
            [str(python), "-m", "pytest", *tests, "-p", "no:cacheprovider", "-q", f"--junitxml={report}", *extra_args],
            cwd=REPO,
            env={k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))},
            check=False,
        )
        if not report.exists():
            return 0, 1, 0  # pytest itself failed to start: count it as a failure
        suite = ElementTree.parse(report).getroot()
        suite = suite if suite.tag == "testsuite" else suite[0]
        tests, failures, errors, skipped = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        return tests - failures - errors - skipped, failures + errors, skipped


def freeze(version: str) -> None:
    """Resolve the version with pip in a scratch environment and write its constraints file."""
    with tempfile.TemporaryDirectory(prefix=f"octorpa-freeze-{version}-") as tmp:
        python = Path(tmp) / "bin" / "python"
        subprocess.run([sys.executable, "-m", "venv", tmp], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"apache-airflow=={version}", *EXTRA_PINS.get(version, []),
             f"{REPO}[{EXTRAS}]"],
            check=True,
        )  # fmt: skip
        frozen = subprocess.run([str(python), "-m", "pip", "freeze"], check=True, capture_output=True, text=True)
    pins = [line for line in frozen.stdout.splitlines() if not line.startswith(("airflow-provider-octorpa", "-e "))]
    constraints(version).write_text(
        f"# Airflow {version} and what it runs with, as resolved by pip for Python "
        f"{sys.version_info.major}.{sys.version_info.minor} and pinned here: Airflow's\n"
        f"# published constraint files are not reachable from CI. Regenerate with scripts/test_compat.py --freeze {version}.\n"
        + "\n".join(pins)
        + "\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=VERSIONS)
    parser.add_argument("--freeze", metavar="VERSION", choices=[v for v in VERSIONS if v != MAIN_VERSION])
    args, pytest_args = parser.parse_known_args()
    if args.freeze:
        freeze(args.freeze)
        return 0
    # Installing is mostly waiting on downloads and unpacking: two at a time.
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(ensure_venv, args.versions))
    with ThreadPoolExecutor(max_workers=len(args.versions)) as pool:
        runs = pool.map(lambda version: run_suite(version, TESTS, pytest_args), args.versions)
        dag_tests = dict(zip(args.versions, runs, strict=True))
    with ThreadPoolExecutor(max_workers=2) as pool:
        runs = pool.map(lambda version: run_suite(version, SCHEDULER_TESTS, pytest_args), args.versions)
        scheduler_tests = dict(zip(args.versions, runs, strict=True))
    results = {
        version: tuple(a + b for a, b in zip(dag_tests[version], scheduler_tests[version], strict=True))
        for version in args.versions
    }
    for version, (passed, failed, skipped) in results.items():
        print(f"compat: airflow={version} passed={passed} failed={failed}" + (f" skipped={skipped}" if skipped else ""))
    return 1 if any(failed for _, failed, _ in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
