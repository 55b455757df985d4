"""The emulator's own checks, driven over HTTP as a real client would (not through the hook)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from airflow_octorpa.emulator import EmulatorConfig, OctoRpaEmulator, WebhookSpec, expected_sign
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK, VENDOR_SECRET, VENDOR_WEBHOOK


def _post(emulator, webhook_id: str, body: dict) -> requests.Response:
    return requests.post(emulator.webhook_url(webhook_id), json=body, timeout=10)


def _signed(secret: str, params: dict, timestamp: int | None = None, **fields) -> dict:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    return {"sign": expected_sign(ts, secret), "params": params, "timestamp": ts, **fields}


def test_vendor_test_vector():
    assert expected_sign("1700000000", "SEC123") == "j/tImR0k8vYXRsYw0+GHVQkV1v/J/8obOuMU7PE/KDo="


def test_valid_call_starts_a_run_and_answers_the_vendor_shape(emulator):
    answer = _post(emulator, VENDOR_WEBHOOK, _signed(VENDOR_SECRET, {"变量1": "AAA", "变量2": "BBBB", "变量3": 10}))
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"enterpriseId", "flowId", "flowProcessNo"}
    assert body["flowProcessNo"].isdigit() and len(body["flowProcessNo"]) == 18
    (run,) = requests.get(f"{emulator.url}/_emulator/runs", timeout=10).json()
    assert run["flow_process_no"] == body["flowProcessNo"]
    assert run["messages"] == [{"title": "AAA", "text": "BBBB"}, {"title": "计算", "text": "5"}]


def test_field_names_are_read_case_insensitively_as_the_csharp_sample_sends_them(emulator):
    ts = str(int(time.time()))
    body = {
        "Timestamp": ts,
        "Sign": expected_sign(ts, ORDER_SECRET),
        "Params": {"订单号": "SO-CS"},
        "SpecifiedBot": "robot-finance-01",
    }
    assert _post(emulator, ORDER_WEBHOOK, body).status_code == 200
    (run,) = emulator.state.snapshot("runs")
    assert (run["params"], run["robot"]) == ({"订单号": "SO-CS"}, "robot-finance-01")


@pytest.mark.parametrize(
    "make_body",
    [
        lambda: _signed("wrong", {"订单号": "1"}),
        lambda: _signed(ORDER_SECRET, {"订单号": "1"}, timestamp=int(time.time()) - 3700),
        lambda: _signed(ORDER_SECRET, {"订单号": "1"}, timestamp=int(time.time()) + 3700),
        lambda: {"sign": "", "params": {}, "timestamp": str(int(time.time()))},
        lambda: {"params": {}},
        lambda: {"sign": "x", "params": {}, "timestamp": "soon"},
    ],
    ids=["wrong-secret", "stale", "future", "empty-sign", "missing-fields", "bad-timestamp"],
)
def test_signature_or_timestamp_refused_with_the_vendor_code(emulator, make_body):
    # Timestamps are taken when the test runs, not when the module is collected minutes earlier.
    answer = _post(emulator, ORDER_WEBHOOK, make_body())
    assert answer.status_code == 400
    assert answer.json()["code"] == "SignatureVerificationFailureOrTimestampExpired"
    assert set(answer.json()) == {"code", "description", "requestId"}
    assert emulator.state.snapshot("runs") == []


def test_timestamp_inside_the_hour_is_accepted(emulator):
    assert (
        _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {}, timestamp=int(time.time()) - 3500)).status_code == 200
    )


def test_unknown_disabled_robot_and_params_errors(emulator):
    assert _post(emulator, "nope", _signed("x", {})).json()["code"] == "WebhookNotFound"
    emulator.state.put_webhook(
        WebhookSpec.from_dict({"id": "off", "robot": "robot-warehouse-01", "enabled": False, "app": {"inputs": {}}})
    )
    assert _post(emulator, "off", {"params": {}}).json()["code"] == "WebhookDisabled"
    answer = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {}, SpecifiedBot="robot-ghost"))
    assert (answer.status_code, answer.json()["code"]) == (400, "RobotNotFound")
    answer = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, ["not", "a", "mapping"]))  # type: ignore[arg-type]
    assert answer.json()["code"] == "InvalidParams"
    answer = requests.post(emulator.webhook_url(ORDER_WEBHOOK), data=b"<xml/>", timeout=10)
    assert answer.json()["code"] == "InvalidRequestBody"
    assert emulator.state.snapshot("runs") == []


def test_rate_limits_are_moving_windows_shared_by_all_webhooks(emulator):
    emulator.state.configure(rate_limits="3/2 seconds")
    try:
        statuses = [
            _post(emulator, hook, _signed(secret, {})).status_code
            for hook, secret in [(ORDER_WEBHOOK, ORDER_SECRET), (VENDOR_WEBHOOK, VENDOR_SECRET)] * 2
        ]
        assert statuses == [200, 200, 200, 429]
        refused = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {}))
        assert refused.status_code == 429 and refused.json()["code"] == "TooManyRequests"
        assert 1 <= int(refused.headers["Retry-After"]) <= 2
        time.sleep(2.1)  # the window moves: the first calls have left it
        assert _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {})).status_code == 200
    finally:
        emulator.state.configure(rate_limits="5/second;20/minute")


def test_default_limits_refuse_the_sixth_call_in_a_second(emulator):
    bodies = [_signed(ORDER_SECRET, {"订单号": str(i)}) for i in range(6)]
    started = time.monotonic()
    statuses = [_post(emulator, ORDER_WEBHOOK, body).status_code for body in bodies]
    if time.monotonic() - started < 1.0:  # only meaningful when all six landed within one second
        assert statuses == [200] * 5 + [429]
    assert len(emulator.state.snapshot("runs")) == statuses.count(200)


def test_records_over_http_hold_no_sign_value(emulator):
    body = _signed(ORDER_SECRET, {"订单号": "SO-REC"})
    _post(emulator, ORDER_WEBHOOK, body)
    _post(emulator, ORDER_WEBHOOK, _signed("wrong-secret", {"订单号": "SO-BAD"}))
    raw = requests.get(f"{emulator.url}/_emulator/calls", timeout=10).text
    calls = json.loads(raw)
    assert [(c["status"], c["params"]["订单号"], c["signed"]) for c in calls] == [
        (200, "SO-REC", True),
        (400, "SO-BAD", True),
    ]
    assert body["sign"] not in raw and ORDER_SECRET not in raw
    config = requests.get(f"{emulator.url}/_emulator/config", timeout=10).text
    assert ORDER_SECRET not in config and VENDOR_SECRET not in config


def test_get_or_head_on_a_webhook_starts_nothing(emulator):
    assert requests.get(emulator.webhook_url(ORDER_WEBHOOK), timeout=10).status_code == 405
    assert requests.head(emulator.webhook_url(ORDER_WEBHOOK), timeout=10).status_code == 405
    assert emulator.state.snapshot("calls") == []


def test_settings_and_webhooks_can_be_changed_over_http(emulator):
    try:
        settings = requests.post(f"{emulator.url}/_emulator/settings", json={"rate_limits": "1/minute"}, timeout=10)
        assert settings.json()["rate_limits"] == "1/minute"
        answer = requests.post(
            f"{emulator.url}/_emulator/webhooks/from-http",
            json={"robot": "robot-new", "secret": "s-http", "app": {"name": "对账", "inputs": {"文件": ""}}},
            timeout=10,
        )
        assert answer.status_code == 200
        assert _post(emulator, "from-http", _signed("s-http", {"文件": "a.xlsx"})).status_code == 200
        assert _post(emulator, "from-http", _signed("s-http", {"文件": "b.xlsx"})).status_code == 429
        assert emulator.state.snapshot("runs")[0]["robot"] == "robot-new"
    finally:
        emulator.state.configure(rate_limits="5/second;20/minute")


def test_flow_process_numbers_are_unique_under_concurrency():
    from concurrent.futures import ThreadPoolExecutor

    config = EmulatorConfig.from_dict(
        {"rate_limits": "1000/second", "webhooks": [{"id": "h", "robot": "r", "app": {"inputs": {}}}]}
    )
    with OctoRpaEmulator(config) as emulator, ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _post(emulator, "h", {"params": {}}).json(), range(40)))
    assert len({a["flowProcessNo"] for a in answers}) == 40


def test_command_line_serves_on_a_chosen_port_and_stops_on_sigterm(tmp_path: Path):
    config = tmp_path / "emulator.json"
    config.write_text(
        json.dumps({"webhooks": [{"id": "cli", "robot": "r1", "secret": "s-cli", "app": {"inputs": {"x": 0}}}]}),
        encoding="utf-8",
    )
    port_file = tmp_path / "port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_octorpa.emulator",
            "--config",
            str(config),
            "--port-file",
            str(port_file),
            "--rate-limits",
            "2/second",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        announced = json.loads(process.stdout.readline())
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int(port_file.read_text()) == announced["port"]
        url = announced["webhooks"]["cli"]
        assert announced["secrets"]["cli"] == "s-cli"  # what a connection to it needs
        ts = str(int(time.time()))
        answer = requests.post(
            url, json={"sign": expected_sign(ts, "s-cli"), "timestamp": ts, "params": {"x": 1}}, timeout=10
        )
        assert answer.status_code == 200
        assert requests.get(f"{announced['url']}/_emulator/config", timeout=10).json()["rate_limits"] == "2/second"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.parametrize(
    ("fault", "client_sees", "started"),
    [
        ({"kind": "drop_before_read"}, "reset", False),
        ({"kind": "rate_limit"}, 429, False),
        ({"kind": "status_before_start", "status": 500}, 500, False),
        ({"kind": "html"}, 502, False),
        ({"kind": "delay_after_start", "seconds": 1.5}, "timeout", True),
        ({"kind": "reset_after_start"}, "reset", True),
        ({"kind": "status_after_start", "status": 503}, 503, True),
    ],
    ids=lambda v: v["kind"] if isinstance(v, dict) else None,
)
def test_faults_queued_over_http_behave_as_named(emulator, fault, client_sees, started):
    queued = requests.post(f"{emulator.url}/_emulator/faults/{ORDER_WEBHOOK}", json={"faults": [fault]}, timeout=10)
    assert queued.json() == {"queued": 1}
    try:
        answer = requests.post(
            emulator.webhook_url(ORDER_WEBHOOK), json=_signed(ORDER_SECRET, {"订单号": "F"}), timeout=1
        )
        seen = answer.status_code
        if seen == 502 and fault["kind"] == "html":
            assert answer.headers["Content-Type"].startswith("text/html") and "<html>" in answer.text
    except requests.Timeout:
        seen = "timeout"
    except requests.ConnectionError:
        seen = "reset"
    assert seen == client_sees
    assert len(emulator.state.snapshot("runs")) == int(started)
    # The next call is served normally: a fault is taken once.
    assert _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {"订单号": "G"})).status_code == 200


def test_random_faults_are_seeded_and_stop_on_null(emulator):
    spec = {"seed": 5, "rate_limit": 0.5, "unknown": 0.0, "status_before_start": 0.5}
    requests.post(f"{emulator.url}/_emulator/random-faults", json=spec, timeout=10)
    emulator.state.configure(rate_limits="1000/second")
    try:
        first = [_post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {})).status_code for _ in range(6)]
        requests.post(f"{emulator.url}/_emulator/random-faults", json=spec, timeout=10)  # the same seed again
        again = [_post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {})).status_code for _ in range(6)]
        requests.post(f"{emulator.url}/_emulator/random-faults", json=None, timeout=10)
        after = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {})).status_code
    finally:
        emulator.state.configure(rate_limits="5/second;20/minute")
    assert first == again and set(first) <= {429, 503} and after == 200


# -- bad requests: answered with a 4xx and a message, and the emulator keeps serving -------------


def _raw(emulator, request: bytes, timeout: float = 10) -> tuple[int, dict]:
    """Send ``request`` as it is and read the answer's status and JSON body."""
    import socket

    with socket.create_connection(("127.0.0.1", emulator.port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body[: _length(data)] or b"{}")


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _post_raw(path: str, body: bytes, length: str | None = None) -> bytes:
    length = str(len(body)) if length is None else length
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
    ).encode() + body


_INVOKE = f"/api/v1/bots/webhooks/{ORDER_WEBHOOK}/invoke"
BAD_REQUESTS = [
    ("length-word", _INVOKE, b"{}", "abc", 400),
    ("length-negative", _INVOKE, b"{}", "-5", 400),
    ("length-huge", _INVOKE, b"{}", str(10**12), 413),
    ("length-float", _INVOKE, b"{}", "1.5", 400),
    ("invoke-deep-json", _INVOKE, b"[" * 100000, None, 400),
    ("invoke-not-utf8", _INVOKE, b'{"a": "\xff"}', None, 400),
    ("settings-not-json", "/_emulator/settings", b"{", None, 400),
    ("settings-list", "/_emulator/settings", b"[]", None, 400),
    ("settings-bad-limits", "/_emulator/settings", b'{"rate_limits": "lots"}', None, 400),
    ("settings-limits-number", "/_emulator/settings", b'{"rate_limits": 5}', None, 400),
    ("settings-zero-limit", "/_emulator/settings", b'{"rate_limits": "0/second"}', None, 400),
    ("settings-tolerance-word", "/_emulator/settings", b'{"timestamp_tolerance": "soon"}', None, 400),
    ("settings-tolerance-negative", "/_emulator/settings", b'{"timestamp_tolerance": -1}', None, 400),
    ("settings-unknown", "/_emulator/settings", b'{"limits": "5/second"}', None, 400),
    ("faults-not-a-list", f"/_emulator/faults/{ORDER_WEBHOOK}", b'{"faults": "rate_limit"}', None, 400),
    ("faults-unknown-kind", f"/_emulator/faults/{ORDER_WEBHOOK}", b'{"faults": [{"kind": "boom"}]}', None, 400),
    ("faults-no-kind", f"/_emulator/faults/{ORDER_WEBHOOK}", b'{"faults": [{}]}', None, 400),
    (
        "faults-count-huge",
        f"/_emulator/faults/{ORDER_WEBHOOK}",
        b'{"faults": [{"kind": "rate_limit", "count": 1000000000}]}',
        None,
        400,
    ),
    (
        "faults-count-word",
        f"/_emulator/faults/{ORDER_WEBHOOK}",
        b'{"faults": [{"kind": "rate_limit", "count": "x"}]}',
        None,
        400,
    ),
    (
        "faults-status-word",
        f"/_emulator/faults/{ORDER_WEBHOOK}",
        b'{"faults": [{"kind": "html", "status": "x"}]}',
        None,
        400,
    ),
    (
        "faults-seconds-inf",
        f"/_emulator/faults/{ORDER_WEBHOOK}",
        b'{"faults": [{"kind": "delay_after_start", "seconds": 1e999}]}',
        None,
        400,
    ),
    ("random-rate-word", "/_emulator/random-faults", b'{"rate_limit": "often"}', None, 400),
    ("random-rates-over-one", "/_emulator/random-faults", b'{"rate_limit": 0.7, "unknown": 0.7}', None, 400),
    ("random-list", "/_emulator/random-faults", b"[1]", None, 400),
    ("webhook-new-without-robot", "/_emulator/webhooks/new-one", b'{"enabled": false}', None, 400),
    ("webhook-enabled-word", f"/_emulator/webhooks/{ORDER_WEBHOOK}", b'{"enabled": "no"}', None, 400),
    ("webhook-secret-number", f"/_emulator/webhooks/{ORDER_WEBHOOK}", b'{"secret": 5}', None, 400),
    ("webhook-inputs-list", f"/_emulator/webhooks/{ORDER_WEBHOOK}", b'{"app": {"inputs": [1]}}', None, 400),
    ("webhook-unknown-field", f"/_emulator/webhooks/{ORDER_WEBHOOK}", b'{"signed": false}', None, 400),
    ("control-unknown", "/_emulator/nothing", b"{}", None, 404),
]


@pytest.mark.parametrize(
    ("path", "body", "length", "status"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_a_bad_request_gets_a_4xx_with_a_message_and_changes_nothing(emulator, path, body, length, status):
    before = emulator.state.public_config()
    answer_status, answer = _raw(emulator, _post_raw(path, body, length))
    assert answer_status == status and answer.get("description"), answer
    assert emulator.state.public_config() == before  # nothing half-applied
    assert emulator.state.snapshot("runs") == []
    # Still serving, and calls still work (no poisoned state such as a string fault rate).
    response = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {"订单号": "after"}))
    assert response.status_code == 200, response.text


def test_a_partial_webhook_update_merges_and_keeps_signing(emulator):
    assert requests.post(f"{emulator.url}/_emulator/webhooks/{ORDER_WEBHOOK}", json={"enabled": False}).ok
    (hook,) = [w for w in emulator.state.public_config()["webhooks"] if w["id"] == ORDER_WEBHOOK]
    assert hook["enabled"] is False and hook["signed"] is True  # the secret stayed
    refused = _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {"订单号": "x"}))
    assert refused.status_code == 400 and refused.json()["code"] == "WebhookDisabled"
    assert requests.post(f"{emulator.url}/_emulator/webhooks/{ORDER_WEBHOOK}", json={"enabled": True}).ok
    assert _post(emulator, ORDER_WEBHOOK, _signed(ORDER_SECRET, {"订单号": "x"})).status_code == 200
    assert _post(emulator, ORDER_WEBHOOK, {"params": {}, "timestamp": "1", "sign": ""}).status_code == 400


def test_a_request_held_open_is_dropped_after_the_read_timeout(monkeypatch):
    import socket

    from airflow_octorpa.emulator.server import _Handler

    monkeypatch.setattr(_Handler, "timeout", 0.5)
    with OctoRpaEmulator() as emulator:
        with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
            sock.sendall(_post_raw(_INVOKE, b"", "100"))  # promises 100 bytes, sends none
            assert sock.recv(65536) == b""  # closed by the emulator, not left holding a thread
        assert requests.get(f"{emulator.url}/_emulator/health", timeout=5).ok


def test_it_serves_on_ipv6_loopback_and_warns_off_loopback():
    import socket

    from airflow_octorpa.emulator.server import binding_warning

    assert binding_warning("127.0.0.1") is None and binding_warning("::1") is None
    assert "not a loopback address" in binding_warning("0.0.0.0")
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        emulator = OctoRpaEmulator(host="::1")
    except OSError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    with emulator:
        assert emulator.url.startswith("http://[::1]:")
        assert requests.get(f"{emulator.url}/_emulator/health", timeout=5).json() == {"status": "ok"}


def test_octorpa_emulator_help_names_the_built_in_webhooks_and_their_secrets():
    import subprocess
    import sys
    from pathlib import Path

    octorpa = str(Path(sys.executable).with_name("octorpa"))
    done = subprocess.run([octorpa, "emulator", "--help"], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0 and done.stdout.startswith("usage: octorpa emulator"), done.stderr
    assert "order-processing: app 订单处理" in done.stdout and "secret demo-order-secret" in done.stdout
    assert "vendor-example" in done.stdout and "secret SEC123" in done.stdout
    assert "/api/v1/bots/webhooks/<id>/invoke" in done.stdout
