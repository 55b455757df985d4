"""Every command of the README, run as a reader would run it (``make docs`` runs this file).

The quick start runs in a fresh Airflow environment ("an Airflow you run": a new virtualenv with
only Apache Airflow, pinned as the main ``.venv``), from a copy of the checkout, against the
bundled emulator on loopback. The README's placeholders are the only thing replaced: the webhook
URL and the 签名密钥 become the emulator's. "From a checkout" runs ``make demo`` as written; its
``make test`` and ``make docs`` are the suites ``.ci/run`` runs (this file among them), so they
are checked to be there rather than run from inside themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from airflow_octorpa.emulator import OctoRpaEmulator, default_config

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
WEBHOOK, SECRET = "order-processing", "demo-order-secret"  # the emulator's built-in order app
PLACEHOLDER_URL = "https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/<webhookId>/invoke"
PLACEHOLDER_SECRET = "<签名密钥>"
RUN_BY_CI = {"make test", "make docs"}  # what .ci/run runs itself


@dataclass
class Block:
    section: str
    language: str
    code: str


def readme_blocks() -> list[Block]:
    """The README's fenced code blocks, in order, each with the ``## `` section it is in."""
    blocks, section = [], ""
    pattern = re.compile(r"^## ([^\n]+)$|^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
    for match in pattern.finditer(README.read_text(encoding="utf-8")):
        if match.group(1):
            section = match.group(1).strip()
        else:
            blocks.append(Block(section, match.group(2), match.group(3)))
    return blocks


def _commands(block: Block) -> list[str]:
    """A shell block's commands: a line ending inside quotes continues on the next."""
    commands, current = [], ""
    for line in block.code.splitlines():
        current = f"{current}\n{line}" if current else line
        if current.count("'") % 2 == 0:
            command = re.sub(r"\s+#.*$", "", current).strip()  # a trailing comment
            if command:
                commands.append(command)
            current = ""
    assert not current, f"unbalanced quotes in a README block: {block.code!r}"
    return commands


@pytest.fixture(scope="module")
def emulator() -> Iterator[OctoRpaEmulator]:
    with OctoRpaEmulator(default_config()) as running:
        yield running


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A new virtualenv with Apache Airflow only, a migrated SQLite home, a DAGs folder."""
    root = tmp_path_factory.mktemp("deployment")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    airflow = f"apache-airflow=={version('apache-airflow')}"
    constraints = REPO / "constraints" / f"airflow-{version('apache-airflow')}.txt"
    subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", "-c", str(constraints), airflow],
        check=True,
        capture_output=True,
    )
    home = root / "airflow-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV", "PYTHON"))}
    env.update(
        PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        # Airflow's defaults otherwise, load_examples=True included: what a new user runs.
    )
    (home / "dags").mkdir(parents=True)
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    return env


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout's files (what git tracks, and what is new), so the wheel build leaves
    nothing in the working tree."""
    copy = tmp_path_factory.mktemp("checkout")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode("utf-8")
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    return copy


def _run(command: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"README command failed: {command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _fill_placeholders(command: str, emulator: OctoRpaEmulator) -> str:
    command = command.replace(PLACEHOLDER_URL, emulator.webhook_url(WEBHOOK)).replace(PLACEHOLDER_SECRET, SECRET)
    assert not re.search(r"<[^<>\s]+>", command), f"a README placeholder this test does not know: {command}"
    return command


def test_the_quick_start_runs_on_a_fresh_airflow(deployment, checkout, emulator):
    blocks = [b for b in readme_blocks() if b.section.startswith("Quick start")]
    assert [b.language for b in blocks] == ["sh", "sh", "sh", "python", "sh"], blocks
    dag_file = re.search(r"in your DAGs folder as `([\w.]+)`", README.read_text(encoding="utf-8"))
    assert dag_file, "the README no longer says where the DAG goes"
    output = ""
    for block in blocks:
        if block.language == "python":
            (Path(deployment["AIRFLOW__CORE__DAGS_FOLDER"]) / dag_file.group(1)).write_text(
                block.code, encoding="utf-8"
            )
            continue
        for command in _commands(block):
            output = _run(_fill_placeholders(command, emulator), checkout, deployment)

    # The provider came from the wheel, not from the checkout.
    elsewhere = Path(deployment["AIRFLOW_HOME"])  # not the checkout, which python -c would put first on sys.path
    where = _run("python -c 'import airflow_octorpa; print(airflow_octorpa.__file__)'", elsewhere, deployment)
    assert "site-packages" in where and str(checkout) not in where
    # `airflow dags test orders` started one signed run with the DAG's params, and says which.
    (call,) = emulator.state.snapshot("calls")
    (run,) = emulator.state.snapshot("runs")
    assert call["status"] == 200 and call["signed"]
    assert run["params"] == {"订单号": "SO-1001", "数量": 10}
    assert f"Started Octopus RPA run flowProcessNo={run['flow_process_no']}" in output
    # On Airflow's defaults the provider makes Airflow log no error (3.3 looks for its example DAGs).
    assert "Could not load provider module" not in output and "airflow_provider_octorpa" not in output
    # The pool the README imports is the one the rate limits need.
    pools = json.loads(_run("airflow pools list --output json", checkout, deployment))
    (pool,) = [p for p in pools if p["pool"] == "octorpa"]
    assert int(pool["slots"]) == 5 and str(pool["include_deferred"]).lower() == "true"


@pytest.mark.timeout(900)  # make demo starts Airflow's components three times: about 2 to 5 minutes
def test_the_checkout_commands_run_or_are_what_ci_runs(emulator):
    (block,) = [b for b in readme_blocks() if b.section == "From a checkout"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    commands = _commands(block)
    assert "make demo" in commands
    for command in commands:
        if command in RUN_BY_CI:
            assert re.search(rf"^{re.escape(command)}\b", ci, re.MULTILINE), f"{command} is not in .ci/run"
            continue
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))}
        output = _run(command, REPO, env)
        if command == "make demo":
            assert re.search(r"Started Octopus RPA run: flowProcessNo = \d+", output), output[-2000:]
            assert "got the app's output 运单号 = SF1000000001" in output, output[-2000:]
            assert re.search(r"the wait's log showed the app's progress \([1-9]\d* line", output), output[-2000:]
            assert re.search(r"flowProcessNo=\d+ progress #\d+ at .*: \d+% 第 \d+ 步", output), output[-2000:]
            assert re.search(r"DAG run \S+ of example_octorpa_inbox loaded [12] report", output), output[-2000:]
            assert "emulator stopped" in output


def test_the_readme_names_only_files_and_make_targets_that_exist():
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"`make ([\w-]+)`", text):
        assert re.search(rf"^{re.escape(target)}:", (REPO / "Makefile").read_text(), re.MULTILINE), target
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        assert (REPO / link).exists(), f"README links to a missing file: {link}"
    for path in re.findall(r"`((?:example_dags|docs|constraints|scripts)/[^`<>*]+)`", text):
        assert (REPO / path).exists(), f"README names a missing file: {path}"


def test_the_emulator_url_the_readme_replaces_is_the_vendors_form(emulator):
    # The placeholder URL has the vendor's path, so the test's replacement changes only the host.
    assert (
        urlsplit(emulator.webhook_url(WEBHOOK)).path == urlsplit(PLACEHOLDER_URL.replace("<webhookId>", WEBHOOK)).path
    )
