"""Bad input, as a fuzzing user or an attacker gives it: every case is refused before anything is
sent, with a typed error (the hook) or exit code 2 and one line naming the fix (the ``octorpa``
command), never a traceback. The emulator receives nothing in any case."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from airflow_octorpa.exceptions import OctoRpaConfigurationError, OctoRpaInvalidParamsError
from airflow_octorpa.hooks.octorpa import MAX_BODY_BYTES, OctoRpaHook
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK

OCTORPA = str(Path(sys.executable).with_name("octorpa"))
GOOD_HOST = "{url}"  # the emulator's order webhook, filled in per test

# -- the hook: connections ----------------------------------------------------------------------

CONNECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("no-host", {"password": "x"}, "has no webhook URL"),
    ("blank-host", {"host": "  "}, "has no webhook URL"),
    ("ftp", {"host": "ftp://example.invalid/hook"}, "not an http(s) URL"),
    ("scheme-only", {"host": "https://"}, "not an http(s) URL"),
    ("space-in-host", {"host": "https://a b/x/invoke"}, "not a valid host name"),
    ("symbol-host", {"host": "https://\u2603\u2603.invalid/x/invoke"}, "not a valid host name"),
    ("full-width-host", {"host": "https://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/x"}, "not a valid host name"),
    ("underscore-only", {"host": "https://_/x"}, "not a valid host name"),
    ("user-and-password", {"host": "https://user:pw@api-rpa.bazhuayu.com/x/invoke"}, "user info"),
    ("user", {"host": "https://user@api-rpa.bazhuayu.com/x/invoke"}, "user info"),
    ("plain-http", {"host": "http://api-rpa.bazhuayu.com/x/invoke"}, "plain http://"),
    ("plain-http-private", {"host": "http://10.0.0.5/x/invoke"}, "plain http://"),
    ("port-too-big", {"host": "https://h.invalid:99999/x"}, "valid port"),
    ("port-not-a-number", {"host": "https://h.invalid:abc/x"}, "valid port"),
    ("port-beside-url", {"host": "https://h.invalid/x", "port": 8443}, "set the port to 443"),
    ("console-page", {"host": "https://rpa.bazhuayu.com/#/app/webhook/123"}, "not a webhook URL: it has a '#...' part"),
    ("host-only", {"host": "https://api-rpa.bazhuayu.com/"}, "not a webhook URL: it has no path"),
    ("page-file", {"host": "https://rpa.bazhuayu.com/console/index.html"}, "ends in a web page"),
    ("timeout-word", {"extra": {"timeout": "soon"}}, "timeout 'soon'"),
    ("timeout-negative", {"extra": {"timeout": -1}}, "timeout -1"),
    ("timeout-zero", {"extra": {"timeout": 0}}, "timeout 0"),
    ("timeout-huge", {"extra": {"timeout": 1e308}}, "timeout 1e+308"),
    ("timeout-inf", {"extra": {"timeout": "inf"}}, "timeout 'inf'"),
    ("timeout-nan", {"extra": {"timeout": "nan"}}, "timeout 'nan'"),
    ("timeout-true", {"extra": {"timeout": True}}, "timeout True"),
    ("timeout-list", {"extra": {"timeout": [1]}}, "timeout [1]"),
    ("timeout-object", {"extra": {"timeout": {"s": 1}}}, "timeout {'s': 1}"),
    ("timeout-too-long", {"extra": {"timeout": 601}}, "at most 600"),
    ("pool-size-superscript", {"extra": {"pool_size": "\u00b2"}}, "pool_size '²'"),
    ("pool-size-full-width", {"extra": {"pool_size": "\uff15"}}, "pool_size '５'"),
    ("pool-size-word", {"extra": {"pool_size": "five"}}, "pool_size 'five'"),
    ("pool-size-zero", {"extra": {"pool_size": 0}}, "pool_size 0"),
    ("pool-size-negative", {"extra": {"pool_size": -1}}, "pool_size -1"),
    ("pool-size-fraction", {"extra": {"pool_size": 1.5}}, "pool_size 1.5"),
    ("pool-size-true", {"extra": {"pool_size": True}}, "pool_size True"),
    ("pool-size-huge", {"extra": {"pool_size": 10**6}}, "pool_size 1000000"),
    ("pool-size-over-limit", {"extra": {"pool_size": 8}}, "at most 5 slots"),
    ("pool-slots-old-name", {"extra": {"pool_slots": 1}}, "Rename it to 'pool_size'"),
    ("rate-limits-word", {"extra": {"rate_limits": "lots"}}, "rate_limits 'lots'"),
    ("rate-limits-number", {"extra": {"rate_limits": 5}}, "rate_limits 5"),
    ("rate-limits-list", {"extra": {"rate_limits": ["5/second"]}}, "rate_limits ['5/second']"),
    ("rate-limits-zero", {"extra": {"rate_limits": "0/second"}}, "rate_limits '0/second'"),
    ("rate-limits-trailing", {"extra": {"rate_limits": "5/second;;"}}, "rate_limits '5/second;;'"),
    ("bot-id-number", {"extra": {"bot_id": 7}}, "bot_id extra"),
    ("bot-id-list", {"extra": {"bot_id": ["a"]}}, "bot_id extra"),
    ("pool-number", {"extra": {"pool": 5}}, "has the pool 5"),
    ("pool-too-long", {"extra": {"pool": "p" * 300}}, "at most 256"),
    ("pool-newline", {"extra": {"pool": "a\nb"}}, "has the pool"),
    ("insecure-flag-word", {"extra": {"allow_insecure_http": "maybe"}}, "allow_insecure_http='maybe'"),
    ("extra-list", {"extra_text": "[1, 2]"}, "JSON list"),
    ("extra-not-json", {"extra_text": "timeout=5"}, "not JSON"),
    ("extra-string", {"extra_text": '"text"'}, "JSON str"),
    ("extra-deep", {"extra_text": "[" * 500 + "]" * 500}, "JSON list"),
]

# -- the hook: a call's parameters and robot ----------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"x": value}
    return value


def _self_referencing_dict() -> dict[str, Any]:
    value: dict[str, Any] = {"a": 1}
    value["self"] = value
    return value


def _self_referencing_list() -> dict[str, Any]:
    items: list[Any] = [1]
    items.append(items)
    return {"items": items}


PARAMS: list[tuple[str, Any, dict[str, Any], str]] = [
    ("a-list", ["订单号", "SO-1"], {}, "mapping"),
    ("a-string", "订单号=SO-1", {}, "mapping"),
    ("int-key", {1: "x"}, {}, "key 1"),
    ("nested-int-key", {"明细": {2: "x"}}, {}, "key 2"),
    ("tuple-key", {(1, 2): "x"}, {}, "key (1, 2)"),
    ("datetime", {"时间": datetime.datetime(2026, 1, 1)}, {}, "datetime"),
    ("decimal", {"金额": decimal.Decimal("1.5")}, {}, "Decimal"),
    ("set", {"标签": {"a", "b"}}, {}, "set"),
    ("bytes", {"附件": b"\x00"}, {}, "bytes"),
    ("object", {"a": object()}, {}, "object"),
    ("nan", {"比率": math.nan}, {}, "nan"),
    ("minus-inf", {"a": -math.inf}, {}, "-inf"),
    ("inf-in-list", {"列表": [1, math.inf]}, {}, "['列表'][1]"),
    ("nested-3000", _nested(3000), {}, "nests more than"),
    ("self-referencing-dict", _self_referencing_dict(), {}, "nests more than"),
    ("self-referencing-list", _self_referencing_list(), {}, "nests more than"),
    ("surrogate-in-key", {"a\ud800": 1}, {}, "lone surrogate"),
    ("surrogate-in-value", {"a": "b\udfff"}, {}, "lone surrogate"),
    ("huge-int", {"a": 10**5000}, {}, "too large"),
    ("oversized", {"a": "x" * (MAX_BODY_BYTES + 1)}, {}, "over this provider's limit"),
    ("bot-id-number", {"a": 1}, {"bot_id": 5}, "bot_id must be a string"),
    ("bot-id-surrogate", {"a": 1}, {"bot_id": "robot\udfff"}, "bot_id must be a string of valid Unicode"),
]


def _connection(url: str, case: dict[str, Any]) -> str:
    conn: dict[str, Any] = {"conn_type": "octorpa", "password": ORDER_SECRET}
    if "host" in case or "password" not in case:
        conn["host"] = case.get("host", url)
    if "port" in case:
        conn["port"] = case["port"]
    if "extra" in case:
        conn["extra"] = json.dumps(case["extra"])
    if "extra_text" in case:
        conn["extra"] = case["extra_text"]
    if "password" in case and "host" not in case:
        conn.pop("host", None)
    return json.dumps(conn)


@pytest.mark.parametrize(("case", "message"), [c[1:] for c in CONNECTIONS], ids=[c[0] for c in CONNECTIONS])
def test_a_bad_connection_is_refused_with_a_typed_error(emulator, monkeypatch, case, message):
    monkeypatch.setenv("AIRFLOW_CONN_OCTORPA_FUZZ", _connection(emulator.webhook_url(ORDER_WEBHOOK), case))
    with pytest.raises(OctoRpaConfigurationError) as caught:
        OctoRpaHook("octorpa_fuzz").trigger({"订单号": "fuzz"})
    assert type(caught.value) is OctoRpaConfigurationError
    assert message in str(caught.value)
    assert emulator.state.snapshot("calls") == []


@pytest.mark.parametrize(("params", "kwargs", "message"), [c[1:] for c in PARAMS], ids=[c[0] for c in PARAMS])
def test_bad_params_are_refused_with_a_typed_error(emulator, order_conn, params, kwargs, message):
    expected = OctoRpaConfigurationError if "bot_id" in kwargs else OctoRpaInvalidParamsError
    with pytest.raises(expected) as caught:
        OctoRpaHook(order_conn).trigger(params, **kwargs)
    assert type(caught.value) is expected
    assert message in str(caught.value)
    assert emulator.state.snapshot("calls") == []


def test_the_fuzzing_covers_at_least_sixty_hook_inputs():
    assert len(CONNECTIONS) + len(PARAMS) >= 60


# -- the octorpa command ------------------------------------------------------------------------


def _cli_cases(folder: Path, url: str) -> list[tuple[str, list[Any], dict[str, str], str]]:
    """(id, argv, extra environment, what the one line must say)."""
    (folder / "dir").mkdir()
    (folder / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (folder / "latin1.json").write_bytes(b'{"a": "\xe9"}')
    (folder / "big.json").write_text(json.dumps({"a": "x" * (1024 * 1024 + 1)}))
    (folder / "a-file").write_text("")
    (folder / "corrupt" / "octorpa").mkdir(parents=True, mode=0o700)
    conn = {"conn_type": "octorpa", "host": url, "password": ORDER_SECRET}

    def with_conn(**changes: Any) -> dict[str, str]:
        return {"AIRFLOW_CONN_OCTORPA_DEFAULT": json.dumps({**conn, **changes})}

    cases: list[tuple[str, list[Any], dict[str, str], str]] = [
        ("no-separator", ["trigger", "-p", "no-separator"], {}, "NAME=TEXT"),
        ("bad-typed-value", ["trigger", "-p", "数量:=ten"], {}, "not valid JSON"),
        ("empty-typed-name", ["trigger", "-p", ":=1"], {}, "NAME before"),
        ("empty-name", ["trigger", "-p", "=x"], {}, "NAME before"),
        ("blank-name", ["trigger", "-p", "  =x"], {}, "NAME before"),
        ("params-json-list", ["trigger", "--params-json", "[1]"], {}, "JSON object"),
        ("params-json-text", ["trigger", "--params-json", '"text"'], {}, "JSON object"),
        ("params-json-broken", ["trigger", "--params-json", '{"a":'], {}, "not valid JSON"),
        ("params-json-nan", ["trigger", "--params-json", '{"a": NaN}'], {}, "which JSON cannot carry"),
        ("typed-infinity", ["trigger", "-p", "a:=1e999"], {}, "which JSON cannot carry"),
        ("typed-deep", ["trigger", "-p", "a:=" + "[" * 100000], {}, "nests too deeply"),
        ("typed-huge-int", ["trigger", "-p", "a:=" + "9" * 5000], {}, "not valid JSON"),
        ("params-file-missing", ["trigger", "--params-json", f"@{folder / 'missing.json'}"], {}, "cannot read"),
        ("params-file-folder", ["trigger", "--params-json", f"@{folder / 'dir'}"], {}, "cannot read"),
        ("params-file-deep", ["trigger", "--params-json", f"@{folder / 'deep.json'}"], {}, "nests too deeply"),
        ("params-file-latin1", ["trigger", "--params-json", f"@{folder / 'latin1.json'}"], {}, "cannot read"),
        ("params-file-too-big", ["trigger", "--params-json", f"@{folder / 'big.json'}"], {}, "over 1048576 bytes"),
        ("bot-id-undecodable", ["trigger", "--bot-id", b"robot-\xff", "-p", "a=1"], {}, "bot_id must be"),
        ("state-home-is-a-file", ["trigger", "-p", "a=1"], {"XDG_STATE_HOME": str(folder / "a-file")}, "call log"),
        ("corrupt-call-log", ["trigger", "-p", "a=1"], {"XDG_STATE_HOME": str(folder / "corrupt")}, "is corrupt"),
        ("missing-connection", ["trigger", "--conn-id", "octorpa_nowhere", "-p", "a=1"], {}, "is not defined"),
        ("plain-http", ["trigger", "-p", "a=1"], with_conn(host="http://api-rpa.bazhuayu.com/x"), "plain http://"),
        ("user-info", ["trigger", "-p", "a=1"], with_conn(host="https://u:p@h.invalid/x"), "user info"),
        ("extra-list", ["trigger", "-p", "a=1"], with_conn(extra="[1]"), "JSON list"),
        ("timeout-huge", ["trigger", "-p", "a=1"], with_conn(extra='{"timeout": 1e308}'), "timeout"),
        (
            "pool-size-superscript",
            ["pool", "--conn-id", "octorpa_default"],
            with_conn(extra='{"pool_size": "²"}'),
            "pool_size",
        ),
        ("sign-full-width", ["sign", "--timestamp", "\uff11\uff17\uff10\uff10"], {}, "Unix seconds"),
        ("sign-empty", ["sign", "--timestamp", ""], {}, "Unix seconds"),
        ("sign-negative", ["sign", "--timestamp=-5"], {}, "Unix seconds"),
        ("sign-too-long", ["sign", "--timestamp", "9" * 40], {}, "Unix seconds"),
        ("sign-no-secret", ["sign", "--timestamp", "1700000000"], {"_STDIN": "\n"}, "No secret"),
        ("sign-missing-connection", ["sign", "--conn-id", "octorpa_nowhere"], {}, "is not defined"),
    ]
    # A corrupt log where the command looks for the default connection's.
    from airflow_octorpa.cli.trigger import RecentTriggerCalls

    RecentTriggerCalls.for_connection("octorpa_default", state_home=folder / "corrupt").path.write_text("{not json")
    return cases


def _run(argv: list[Any], env: dict[str, str], state_home: Path) -> subprocess.CompletedProcess:
    stdin = env.pop("_STDIN", "")
    environment = {**os.environ, "XDG_STATE_HOME": str(state_home), **env}
    return subprocess.run(
        [OCTORPA, *argv], env=environment, input=stdin.encode(), capture_output=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def cli_results(_emulator_server, tmp_path_factory):
    """Every CLI case run at once (each is a separate process importing Airflow), by id."""
    folder = tmp_path_factory.mktemp("cli-fuzz")
    _emulator_server.state.reset()
    cases = _cli_cases(folder, _emulator_server.webhook_url(ORDER_WEBHOOK))
    default_conn = {
        "AIRFLOW_CONN_OCTORPA_DEFAULT": json.dumps(
            {"conn_type": "octorpa", "host": _emulator_server.webhook_url(ORDER_WEBHOOK), "password": ORDER_SECRET}
        )
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {
            case_id: pool.submit(_run, argv, {**default_conn, **env}, folder / "state")
            for case_id, argv, env, _ in cases
        }
        results = {case_id: future.result() for case_id, future in futures.items()}
    return {case_id: (results[case_id], says) for case_id, _, _, says in cases}, _emulator_server


def _cli_ids() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return [case[0] for case in _cli_cases(Path(tmp), "https://127.0.0.1:1/x")]


@pytest.mark.parametrize("case_id", _cli_ids())
def test_the_command_refuses_bad_input_in_one_line_with_exit_2(cli_results, case_id):
    results, emulator = cli_results
    done, says = results[case_id]
    stderr = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert says in last, stderr
    assert emulator.state.snapshot("calls") == []


def test_the_fuzzing_covers_at_least_thirty_cli_inputs():
    assert len(_cli_ids()) >= 30
