"""The ``octorpa`` command, run as a user runs it: a real process against the emulator."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from airflow_octorpa.cli.trigger import RecentCallsError, RecentTriggerCalls, _split_param
from airflow_octorpa.rate_limit import pool_file
from tests.support.callback_server import report_route
from tests.support.canned_server import CannedAnswer, canned_server
from tests.support.cli_output import json_output, octorpa
from tests.support.settings import (
    ORDER_SECRET,
    ORDER_WEBHOOK,
    VENDOR_SECRET,
    VENDOR_WEBHOOK,
    airflow_cli,
    connection_json,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli_env(emulator, tmp_path) -> dict[str, str]:
    """A connection to the emulator's order webhook and a private state folder for the call log."""
    return {
        "AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET),
        "XDG_STATE_HOME": str(tmp_path),
    }


def test_every_subcommand_has_help():
    for command in ((), ("trigger",), ("doctor",), ("sign",), ("pool",)):
        done = octorpa(*command, "--help")
        assert done.returncode == 0 and "usage: octorpa" in done.stdout, done.stderr
    assert "--port-file" in octorpa("emulator", "--help").stdout


def test_trigger_starts_one_run_with_typed_params_and_prints_it(emulator, cli_env):
    done = octorpa("trigger", "-p", "订单号=SO-CLI", "-p", "数量:=10", "-p", "明细:=[1, 2]", env=cli_env)

    assert done.returncode == 0, done.stderr
    (run,) = emulator.state.snapshot("runs")
    assert json.loads(done.stdout)["flow_process_no"] == run["flow_process_no"]
    assert run["params"] == {"订单号": "SO-CLI", "数量": 10, "明细": [1, 2]}
    assert ORDER_SECRET not in done.stdout + done.stderr


def test_trigger_takes_params_json_and_a_robot(emulator, cli_env, tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"订单号": "SO-F", "数量": 3}), encoding="utf-8")
    done = octorpa("trigger", "--params-json", f"@{tmp_path / 'p.json'}", "--bot-id", "robot-finance-01", env=cli_env)
    assert done.returncode == 0, done.stderr
    (run,) = emulator.state.snapshot("runs")
    assert (run["params"], run["robot"]) == ({"订单号": "SO-F", "数量": 3}, "robot-finance-01")


def test_trigger_refuses_to_exceed_the_connections_limits(emulator, cli_env):
    env = {
        **cli_env,
        "AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, rate_limits="2/minute", pool_size=1
        ),
    }
    codes = [octorpa("trigger", "-p", f"订单号=SO-{i}", env=env) for i in range(3)]
    assert [c.returncode for c in codes] == [0, 0, 3]
    assert "would exceed the connection's rate limits (2/minute)" in codes[2].stderr
    assert len(emulator.state.snapshot("calls")) == 2  # the third was never sent


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (("-p", "no-separator"), 2, "NAME=TEXT"),
        (("-p", "数量:=ten"), 2, "Nothing sent"),
        (("--params-json", "[1]"), 2, "JSON object"),
    ],
)
def test_trigger_bad_input_sends_nothing(emulator, cli_env, args, code, says):
    done = octorpa("trigger", *args, env=cli_env)
    assert done.returncode == code and says in done.stderr, done.stderr
    assert emulator.state.snapshot("calls") == []


def test_trigger_exit_codes_follow_the_outcome(emulator, cli_env):
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "status_before_start", "status": 400}])
    assert octorpa("trigger", "-p", "订单号=A", env=cli_env).returncode == 1  # refused: nothing started
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "status_after_start", "status": 502}])
    done = octorpa("trigger", "-p", "订单号=B", env=cli_env)
    assert done.returncode == 4 and "MAY" in done.stderr.upper()  # the app may have started


@pytest.mark.parametrize("stored_in", ["metadata-database", "secrets-backend"])
def test_every_subcommand_reads_connections_stored_where_airflow_keeps_them(emulator, airflow_db, tmp_path, stored_in):
    """Not only AIRFLOW_CONN_* variables: outside a task, Airflow 3's Task SDK reads neither the
    metadata database nor (on some versions) a secrets backend unless asked as Airflow's CLI asks."""
    conn_id = f"octorpa_{stored_in.replace('-', '_')}"
    conn = {"conn_type": "octorpa", "host": emulator.webhook_url(ORDER_WEBHOOK), "password": ORDER_SECRET}
    env = {"XDG_STATE_HOME": str(tmp_path)}
    if stored_in == "metadata-database":
        airflow_cli("connections", "delete", conn_id)
        done = airflow_cli("connections", "add", conn_id, "--conn-json", json.dumps(conn))
        assert done.returncode == 0, done.stderr
    else:
        (tmp_path / "connections.json").write_text(json.dumps({conn_id: conn}))
        env |= {
            "AIRFLOW__SECRETS__BACKEND": "airflow.secrets.local_filesystem.LocalFilesystemBackend",
            "AIRFLOW__SECRETS__BACKEND_KWARGS": json.dumps(
                {"connections_file_path": str(tmp_path / "connections.json")}
            ),
        }

    pool = octorpa("pool", "--conn-id", conn_id, env=env)
    assert pool.returncode == 0 and json_output(pool.stdout) == pool_file(), pool.stderr
    signed = octorpa("sign", "--conn-id", conn_id, "--timestamp", "1700000000", env=env)
    assert signed.returncode == 0, signed.stderr
    doctor = octorpa("doctor", "--conn-id", conn_id, env=env)
    assert "ok   connection:" in doctor.stdout, doctor.stdout + doctor.stderr
    triggered = octorpa("trigger", "--conn-id", conn_id, "-p", "订单号=stored", env=env)
    assert triggered.returncode == 0, triggered.stderr
    (run,) = emulator.state.snapshot("runs")
    assert json_output(triggered.stdout)["flow_process_no"] == run["flow_process_no"]


def test_sign_matches_the_vendors_test_vector_from_stdin():
    done = octorpa("sign", "--timestamp", "1700000000", stdin="SEC123\n")
    assert (done.returncode, done.stdout.strip()) == (0, "j/tImR0k8vYXRsYw0+GHVQkV1v/J/8obOuMU7PE/KDo=")
    assert "SEC123" not in done.stdout + done.stderr


def test_sign_from_a_connection_and_a_bad_timestamp(emulator, monkeypatch):
    env = {"AIRFLOW_CONN_OCTORPA_V": connection_json(emulator.webhook_url(VENDOR_WEBHOOK), VENDOR_SECRET)}
    done = octorpa("sign", "--conn-id", "octorpa_v", "--timestamp", "1700000000", env=env)
    assert done.stdout.strip() == "j/tImR0k8vYXRsYw0+GHVQkV1v/J/8obOuMU7PE/KDo="
    assert octorpa("sign", "--timestamp", "soon", stdin="x\n").returncode == 2
    assert octorpa("sign", stdin="\n").returncode == 2


def test_pool_prints_what_airflow_pools_import_reads(emulator, tmp_path, airflow_db):
    assert json.loads(octorpa("pool").stdout) == pool_file()
    assert json.loads((REPO / "pools" / "octorpa.json").read_text()) == pool_file()  # one definition
    env = {
        "AIRFLOW_CONN_OCTORPA_TEAM": connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, pool="team_rpa", pool_size=4
        )
    }
    done = octorpa("pool", "--conn-id", "octorpa_team", env=env)
    assert json.loads(done.stdout)["team_rpa"]["slots"] == 4
    (tmp_path / "pool.json").write_text(done.stdout)
    imported = airflow_cli("pools", "import", str(tmp_path / "pool.json"))
    assert imported.returncode == 0, imported.stderr
    listed = json_output(airflow_cli("pools", "get", "team_rpa", "--output", "json").stdout)
    assert listed[0]["slots"] == "4" or listed[0]["slots"] == 4


def test_doctor_passes_on_a_good_setup_and_names_each_fix(emulator, airflow_db):
    good = {"AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET)}
    done = octorpa("doctor", env=good)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(line.split()[0] for line in _report(done.stdout)) == ["WARN"] + ["ok"] * 8
    assert "WARN callbacks: no callback base URL is set" in done.stdout
    assert ORDER_SECRET not in done.stdout

    # Callbacks: the route must answer with its own JSON, not an HTML page with 200 (Airflow 3's UI).
    with report_route() as base:
        done = octorpa("doctor", env={**good, "AIRFLOW__OCTORPA__CALLBACK_BASE_URL": base})
    assert done.returncode == 0 and "ok   callbacks: the report route answers" in done.stdout, done.stdout
    with canned_server(CannedAnswer(status=200, body=b"<html>Airflow</html>", content_type="text/html")) as url:
        base = url.split("/api/")[0]
        done = octorpa("doctor", env={**good, "AIRFLOW__OCTORPA__CALLBACK_BASE_URL": base})
    assert done.returncode == 1 and "FAIL callbacks:" in done.stdout

    # DEBUG logging makes Airflow 3 log secrets being masked: a warning, not a failure.
    done = octorpa("doctor", env={**good, "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG"})
    assert done.returncode == 0 and "WARN logging: [logging] logging_level is DEBUG" in done.stdout

    # Another connection naming the same pool with other limits would overdraw the shared budget.
    other = connection_json(emulator.webhook_url(VENDOR_WEBHOOK), VENDOR_SECRET, rate_limits="10/second;40/minute")
    done = octorpa("doctor", env={**good, "AIRFLOW_CONN_OCTORPA_OTHER": other})
    assert done.returncode == 1 and "FAIL pool's connections" in done.stdout
    assert "'octorpa_other' has rate_limits '10/second;40/minute'" in done.stdout

    # Wrong pool size, no pool, an unreachable host: each check fails with its fix; exit 1.
    airflow_cli("pools", "set", "octorpa_small", "3", "x", "--include-deferred")
    wrong = {
        "AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(
            emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, pool="octorpa_small", pool_size=5
        )
    }
    done = octorpa("doctor", env=wrong)
    assert done.returncode == 1 and "FAIL pool" in done.stdout and "has 3 slots" in done.stdout
    missing = {"AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json("http://127.0.0.1:9/x", "s", pool="nope")}
    done = octorpa("doctor", env=missing)
    assert (
        "FAIL webhook host" in done.stdout
        and "does not exist" in done.stdout
        and "airflow pools set nope" in done.stdout
    )
    # A web page's URL copied instead of the webhook's: named as such, by its path and its HTML answer.
    with canned_server(
        CannedAnswer(status=200, body=b"<html>console</html>", content_type="text/html"), "/console/apps/42"
    ) as url:
        done = octorpa("doctor", env={"AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(url, ORDER_SECRET)})
    assert done.returncode == 1, done.stdout
    assert "WARN webhook URL: The webhook URL's path is not of the shape" in done.stdout
    assert "FAIL webhook host: The URL answered HTTP 200 with a web page (HTML)" in done.stdout
    done = octorpa("doctor", "--conn-id", "octorpa_missing")
    assert done.returncode == 1 and "FAIL connection" in done.stdout and "ok   provider" in done.stdout


def _report(stdout: str) -> list[str]:
    """The doctor's own lines (Airflow may log to the same stream)."""
    return [line for line in stdout.splitlines() if line.startswith(("ok   ", "WARN ", "FAIL "))]


@pytest.mark.parametrize(
    ("pair", "split"),
    [
        ("变量1=AAA", ("变量1", False, "AAA")),
        ("变量3:=10", ("变量3", True, "10")),
        ("url=http://x/?a=b:=c", ("url", False, "http://x/?a=b:=c")),
        ("备注=", ("备注", False, "")),
    ],
)
def test_params_split_on_the_first_separator(pair, split):
    assert _split_param(pair) == split


def test_call_log_waits_for_every_window(tmp_path):
    log = RecentTriggerCalls(tmp_path / "octorpa" / "calls.json")
    base = time.time() - 10  # the log keeps the last hour's calls
    for t in (0.0, 0.1, 0.2, 0.3, 0.4):
        log.record(now=base + t)
    assert log.wait_before_next("5/second;20/minute", now=base + 0.5) == pytest.approx(0.5)
    assert log.wait_before_next("5/second;20/minute", now=base + 1.1) == 0.0
    assert log.wait_before_next("5/minute", now=base + 1.1) == pytest.approx(58.9)


def test_call_log_is_private_refuses_links_and_corruption(tmp_path):
    log = RecentTriggerCalls.for_connection("../../etc/passwd")  # a connection id is no path
    assert log.path.parent.name == "octorpa" and log.path.name.startswith("calls-_.._etc_passwd-")
    (tmp_path / "octorpa").mkdir(mode=0o755)  # as an earlier version left it
    log = RecentTriggerCalls(tmp_path / "octorpa" / "calls.json")
    log.record()
    assert stat.S_IMODE(log.path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600

    # A link planted where the log is written is replaced, never written through.
    target = tmp_path / "precious"
    target.write_text("keep me")
    log.path.unlink()
    log.path.symlink_to(target)
    with pytest.raises(RecentCallsError, match="cannot be read"):
        log.record()
    assert target.read_text() == "keep me"

    log.path.unlink()
    log.path.write_text("{not json")
    with pytest.raises(RecentCallsError, match="is corrupt"):
        log.times()
    assert log.path.read_text() == "{not json"  # a corrupt log is never reset to 'no calls'


def test_trigger_refuses_when_its_call_log_is_unusable(emulator, cli_env, tmp_path):
    state_file = tmp_path / "a-file"
    state_file.write_text("")
    for env in ({**cli_env, "XDG_STATE_HOME": str(state_file)},):
        done = octorpa("trigger", "-p", "订单号=X", env=env)
        assert done.returncode == 2 and "Nothing sent: the call log" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert emulator.state.snapshot("calls") == []
