"""The hook against the emulator (and a canned server for answers the emulator never gives)."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import time

import pytest

from airflow_octorpa.emulator import WebhookSpec
from airflow_octorpa.exceptions import (
    CallOutcome,
    OctoRpaConfigurationError,
    OctoRpaInvalidParamsError,
    OctoRpaTransportError,
    OctoRpaWebhookError,
)
from airflow_octorpa.hooks.octorpa import OctoRpaHook, TriggerResult, build_payload
from tests.support.airflow_cluster import free_port
from tests.support.airflow_helpers import MemoryRecords
from tests.support.canned_server import CannedAnswer, canned_server
from tests.support.settings import ORDER_SECRET, ORDER_WEBHOOK, VENDOR_SECRET, VENDOR_WEBHOOK, connection_json
from tests.support.tls_server import tls_server


def _set_conn(monkeypatch: pytest.MonkeyPatch, value: str, conn_id: str = "octorpa_default") -> OctoRpaHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
    return OctoRpaHook(octorpa_conn_id=conn_id)


# -- the request body ---------------------------------------------------------------------------


def test_body_keeps_chinese_keys_and_native_types(emulator, order_conn):
    params = {"订单号": "SO-1001", "数量": 10, "单价": 12.5, "加急": True, "备注": None, "明细": [{"sku": "A", "n": 2}]}
    result = OctoRpaHook(order_conn).trigger(params)

    (call,) = emulator.state.snapshot("calls")
    assert call["status"] == 200
    assert call["params"] == params
    assert type(call["params"]["数量"]) is int and type(call["params"]["单价"]) is float
    assert call["field_names"] == ["params", "sign", "timestamp"]  # no SpecifiedBot without a robot
    assert call["signed"] is True
    assert abs(int(call["timestamp"]) - time.time()) < 60
    (run,) = emulator.state.snapshot("runs")
    assert result == TriggerResult(run["flow_process_no"], "flow-order-processing", emulator.state.config.enterprise_id)


def test_body_is_utf8_json_not_ascii_escaped():
    payload = build_payload({"变量1": "AAA"}, secret="SEC123", timestamp="1700000000")
    assert payload == {
        "sign": "j/tImR0k8vYXRsYw0+GHVQkV1v/J/8obOuMU7PE/KDo=",
        "params": {"变量1": "AAA"},
        "timestamp": "1700000000",
    }


def test_empty_secret_sends_empty_sign():
    assert build_payload({}, secret="", timestamp="1700000000")["sign"] == ""
    assert build_payload({}, secret=None, timestamp="1700000000")["sign"] == ""


def test_robot_from_task_overrides_connection(emulator, monkeypatch):
    hook = _set_conn(
        monkeypatch, connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, bot_id="robot-finance-01")
    )
    hook.trigger({"订单号": "SO-1"})
    hook.trigger({"订单号": "SO-2"}, bot_id="robot-warehouse-01")

    calls = emulator.state.snapshot("calls")
    assert [c["specified_bot"] for c in calls] == ["robot-finance-01", "robot-warehouse-01"]
    assert [r["robot"] for r in emulator.state.snapshot("runs")] == ["robot-finance-01", "robot-warehouse-01"]


def test_unsigned_trigger_gets_empty_sign(emulator, monkeypatch):
    emulator.state.put_webhook(
        WebhookSpec.from_dict({"id": "open-hook", "robot": "robot-warehouse-01", "app": {"inputs": {"x": 0}}})
    )
    hook = _set_conn(monkeypatch, connection_json(emulator.webhook_url("open-hook")))
    assert hook.trigger({"x": 1}).flow_process_no
    (call,) = emulator.state.snapshot("calls")
    assert call["signed"] is False and call["status"] == 200


def test_vendor_example_app_shows_its_two_message_boxes(emulator, monkeypatch):
    hook = _set_conn(monkeypatch, connection_json(emulator.webhook_url(VENDOR_WEBHOOK), VENDOR_SECRET))
    hook.trigger({"变量1": "AAA", "变量2": "BBBB", "变量3": 10})
    (run,) = emulator.state.snapshot("runs")
    assert run["messages"] == [{"title": "AAA", "text": "BBBB"}, {"title": "计算", "text": "5"}]


# -- errors from the service --------------------------------------------------------------------


def test_wrong_secret_names_the_code_and_the_fix(emulator, monkeypatch):
    hook = _set_conn(monkeypatch, connection_json(emulator.webhook_url(ORDER_WEBHOOK), "not-the-secret"))
    with pytest.raises(OctoRpaWebhookError) as caught:
        hook.trigger({"订单号": "SO-1"})
    err = caught.value
    assert (err.status, err.code) == (400, "SignatureVerificationFailureOrTimestampExpired")
    assert err.description and err.request_id
    assert "secret" in str(err) and "clock" in str(err)
    assert "not-the-secret" not in str(err)
    assert emulator.state.snapshot("runs") == []


def test_rate_limited_call_is_typed_with_retry_after(emulator, order_conn):
    hook = OctoRpaHook(order_conn)
    emulator.state.configure(rate_limits="2/minute")
    try:
        hook.trigger({"订单号": "1"})
        hook.trigger({"订单号": "2"})
        with pytest.raises(OctoRpaWebhookError) as caught:
            hook.trigger({"订单号": "3"})
    finally:
        emulator.state.configure(rate_limits="5/second;20/minute")
    err = caught.value
    assert err.status == 429 and err.is_rate_limited
    assert err.retry_after is not None and 0 < err.retry_after <= 60
    assert "No run was started" in str(err)


def test_unknown_webhook_and_disabled_trigger(emulator, monkeypatch):
    hook = _set_conn(monkeypatch, connection_json(emulator.webhook_url("no-such-hook"), "x"))
    with pytest.raises(OctoRpaWebhookError) as caught:
        hook.trigger({})
    assert (caught.value.status, caught.value.code) == (404, "WebhookNotFound")
    assert "enabled" in str(caught.value)


def test_unknown_robot(emulator, order_conn):
    with pytest.raises(OctoRpaWebhookError) as caught:
        OctoRpaHook(order_conn).trigger({"订单号": "1"}, bot_id="robot-nobody")
    assert caught.value.code == "RobotNotFound"


def test_html_gateway_page_gives_status_and_excerpt(monkeypatch):
    answer = CannedAnswer(
        status=502, body=b"<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html"
    )
    with canned_server(answer) as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1"))
        with pytest.raises(OctoRpaWebhookError) as caught:
            hook.trigger({"a": 1})
    err = caught.value
    assert err.status == 502 and err.code is None
    assert "502 Bad Gateway" in str(err) and "HTTP 502" in str(err)


def test_a_web_pages_url_is_named_as_such_not_as_a_call_that_may_have_started(monkeypatch):
    from airflow_octorpa.exceptions import CallOutcome, OctoRpaNotAWebhookError

    page = CannedAnswer(status=501, body=b"<html><body>Octopus RPA console</body></html>", content_type="text/html")
    with canned_server(page, "/console/apps/42") as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1"))
        with pytest.raises(OctoRpaNotAWebhookError) as caught:
            hook.trigger({"a": 1})
    text = str(caught.value)
    assert "answered HTTP 501 with a web page (HTML)" in text and "not the app's webhook URL" in text
    assert "MAY HAVE STARTED" not in text and "/webhooks/<webhookId>/invoke" in text
    assert caught.value.outcome is CallOutcome.UNKNOWN and not caught.value.safe_to_resend  # never resent
    with canned_server(CannedAnswer(status=200, body=b"<html>console</html>", content_type="text/html"), "/app") as url:
        ok, message = _set_conn(monkeypatch, connection_json(url, "secret-1")).test_connection()
    assert ok is False and "with a web page (HTML)" in message
    with canned_server(CannedAnswer(status=405, body=b"", content_type="application/json"), "/gateway/rpa") as url:
        ok, message = _set_conn(monkeypatch, connection_json(url, "secret-1")).test_connection()
    assert ok is True and "Note: the webhook URL's path is not of the shape" in message  # a gateway may work


def test_error_body_without_request_id_and_in_pascal_case(monkeypatch):
    body = json.dumps({"Code": "SomethingElse", "Description": "说明"}).encode()
    with canned_server(CannedAnswer(status=400, body=body)) as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1"))
        with pytest.raises(OctoRpaWebhookError) as caught:
            hook.trigger({"a": 1})
    assert (caught.value.code, caught.value.description, caught.value.request_id) == ("SomethingElse", "说明", None)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, b"", "application/json"),
        (200, b"<html><body>Welcome to our proxy</body></html>", "text/html"),
        (200, b'{"flowId": "f-1", "enterpriseId": "e-1"}', "application/json"),
        (200, b'{"flowProcessNo": ""}', "application/json"),
        (202, b"accepted", "text/plain"),
        (302, b"", "text/html"),
    ],
)
def test_answer_that_is_not_the_services_is_an_unknown_outcome(monkeypatch, status, body, content_type):
    # A 2xx or 3xx without flowProcessNo came from something in front of the service, which may
    # have passed the call on: the app may have started, and the run cannot be named.
    answer = CannedAnswer(status=status, body=body, content_type=content_type, headers={"Location": "https://x/"})
    with canned_server(answer) as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1"))
        with pytest.raises(OctoRpaWebhookError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.status == status
    assert caught.value.outcome is CallOutcome.UNKNOWN and not caught.value.safe_to_resend
    assert f"HTTP {status}" in str(caught.value)
    assert ("redirect" if status == 302 else "flowProcessNo") in str(caught.value)


# -- transport failures -------------------------------------------------------------------------


def test_refused_connection_says_nothing_was_sent(monkeypatch):
    hook = _set_conn(
        monkeypatch, connection_json(f"http://127.0.0.1:{free_port()}/api/v1/bots/webhooks/x/invoke", "s1234")
    )
    with pytest.raises(OctoRpaTransportError) as caught:
        hook.trigger({"a": 1})
    assert caught.value.request_sent is False
    assert "nothing was started" in str(caught.value)


def test_read_timeout_says_the_run_may_have_started(monkeypatch):
    answer = CannedAnswer(status=200, body=b'{"flowProcessNo": "1"}', delay=2.0)
    with canned_server(answer) as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1", timeout=0.3))
        with pytest.raises(OctoRpaTransportError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.request_sent is True
    assert "may have started" in str(caught.value)
    assert answer.requests and answer.requests[0][0] == "POST"


@pytest.mark.parametrize(
    "raw",
    [
        # Chunked framing cut off in the middle of a chunk: requests raises ChunkedEncodingError.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
        b'40\r\n{"flowProcessNo": ',
        # A body that says gzip and is not: requests raises ContentDecodingError.
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nnot gzip at all"[:-3],
    ],
    ids=["chunked", "content-decoding"],
)
def test_broken_answer_body_says_the_run_may_have_started(monkeypatch, raw):
    answer = CannedAnswer(raw=raw)
    with canned_server(answer) as url:
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1", timeout=5))
        with pytest.raises(OctoRpaTransportError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.request_sent is True and caught.value.outcome is CallOutcome.UNKNOWN
    assert "may have started" in str(caught.value)


def test_tls_error_after_the_request_was_delivered_may_have_started(monkeypatch):
    """The server read the whole POST, then broke the TLS stream: urllib3 raises the same SSLError
    as for a failed handshake, but this request arrived."""
    with tls_server("after_request") as (url, log, cert):
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert.cert))
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1", timeout=5))
        with pytest.raises(OctoRpaTransportError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.request_sent is True and caught.value.outcome is CallOutcome.UNKNOWN
    assert "SSLError" in str(caught.value) and "may have started" in str(caught.value)
    assert len(log.requests) == 1 and log.requests[0].startswith(b"POST ")


@pytest.mark.parametrize("trusted", [True, False], ids=["garbage-handshake", "untrusted-certificate"])
def test_failed_tls_handshake_sends_nothing(monkeypatch, trusted):
    mode = "garbage_handshake" if trusted else "after_request"
    with tls_server(mode) as (url, log, cert):
        if trusted:
            monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert.cert))
        hook = _set_conn(monkeypatch, connection_json(url, "secret-1", timeout=5))
        with pytest.raises(OctoRpaTransportError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.request_sent is False and caught.value.outcome is CallOutcome.NOT_STARTED
    assert log.connections >= 1 and log.requests == []


def test_a_proxy_that_refuses_the_tunnel_sent_nothing(monkeypatch):
    answer = CannedAnswer()  # answers CONNECT with 501, as http.server does for a method it lacks
    with canned_server(answer) as proxy_url:
        proxy = proxy_url.split("/api/")[0]
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTPS_PROXY", proxy)
        hook = _set_conn(
            monkeypatch, connection_json(f"https://127.0.0.1:{free_port()}/api/v1/bots/webhooks/x/invoke", "s1234")
        )
        with pytest.raises(OctoRpaTransportError) as caught:
            hook.trigger({"a": 1})
    assert caught.value.request_sent is False
    assert answer.requests == []


def test_a_local_failure_before_any_io_is_never_sent(monkeypatch):
    """An unreadable CA bundle fails locally (an OSError), before a connection is even made."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    hook = _set_conn(monkeypatch, connection_json("https://127.0.0.1:1/api/v1/bots/webhooks/x/invoke", "secret-1"))
    with pytest.raises(OctoRpaTransportError) as caught:
        hook.trigger({"a": 1})
    assert caught.value.request_sent is False and "never left" in str(caught.value)


def test_netrc_credentials_are_never_attached(monkeypatch, tmp_path):
    """requests would add ~/.netrc's login for the host as an Authorization header to the signed POST."""
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password their-netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    answer = CannedAnswer(status=200, body=b'{"flowProcessNo": "1"}')
    with canned_server(answer) as url:
        _set_conn(monkeypatch, connection_json(url, "secret-1")).trigger({"a": 1})
    assert [name.lower() for name in answer.request_headers[0]].count("authorization") == 0


# -- input that cannot be sent correctly: nothing is sent ---------------------------------------


@pytest.mark.parametrize(
    ("params", "named"),
    [
        (["订单号", "SO-1"], "mapping"),
        ("订单号=SO-1", "mapping"),
        ({1: "x"}, "key 1"),
        ({"明细": {2: "x"}}, "key 2"),
        ({"时间": datetime.datetime(2026, 1, 1)}, "['时间']"),
        ({"金额": decimal.Decimal("1.5")}, "['金额']"),
        ({"标签": {"a", "b"}}, "['标签']"),
        ({"附件": b"\x00"}, "['附件']"),
        ({"比率": math.nan}, "['比率']"),
        ({"列表": [1, math.inf]}, "['列表'][1]"),
    ],
)
def test_params_json_cannot_carry_fail_before_sending(emulator, order_conn, params, named):
    with pytest.raises(OctoRpaInvalidParamsError) as caught:
        OctoRpaHook(order_conn).trigger(params)
    assert named in str(caught.value)
    assert emulator.state.snapshot("calls") == []


def test_oversized_body_is_refused_before_sending(emulator, order_conn):
    from airflow_octorpa.hooks.octorpa import MAX_BODY_BYTES

    with pytest.raises(OctoRpaInvalidParamsError, match=f"limit of {MAX_BODY_BYTES} bytes"):
        OctoRpaHook(order_conn).trigger({"附件": "字" * (MAX_BODY_BYTES // 3 + 1)})  # 3 UTF-8 bytes each
    assert emulator.state.snapshot("calls") == []
    OctoRpaHook(order_conn).trigger({"附件": "x" * (MAX_BODY_BYTES // 2)})  # under the limit: sent


def test_robot_id_must_be_a_string(emulator, order_conn):
    with pytest.raises(OctoRpaConfigurationError, match="bot_id must be a string"):
        OctoRpaHook(order_conn).trigger({}, bot_id=12345)  # type: ignore[arg-type]
    assert emulator.state.snapshot("calls") == []


@pytest.mark.parametrize(
    ("conn", "message"),
    [
        ({"conn_type": "octorpa", "password": "x"}, "has no webhook URL"),
        ({"conn_type": "octorpa", "host": "  "}, "has no webhook URL"),
        ({"conn_type": "octorpa", "host": "ftp://example.invalid/hook"}, "not an http(s) URL"),
        ({"conn_type": "octorpa", "host": "https://"}, "not an http(s) URL"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"timeout": "soon"}}, "timeout 'soon'"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"timeout": -1}}, "timeout -1"),
        (
            {"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"rate_limits": "lots"}},
            "rate_limits 'lots'",
        ),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"bot_id": 7}}, "bot_id extra"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"pool_size": "five"}}, "pool_size 'five'"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"pool_size": 0}}, "pool_size 0"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"pool_size": 8}}, "at most 5 slots"),
        # A Port beside a whole URL may only repeat the URL's own: calls go where the URL says.
        ({"conn_type": "octorpa", "host": "https://h.invalid/x", "port": 8443}, "set the port to 443"),
        ({"conn_type": "octorpa", "host": "http://127.0.0.1:9/x", "port": 80}, "set the port to 9"),
        # The extra's old name, which reads like Airflow's slots per task, is refused by name.
        (
            {"conn_type": "octorpa", "host": "http://127.0.0.1/x", "extra": {"pool_slots": 1}},
            "Rename it to 'pool_size'",
        ),
    ],
)
def test_malformed_connection_fails_before_sending(monkeypatch, conn, message):
    hook = _set_conn(monkeypatch, json.dumps(conn))
    with pytest.raises(OctoRpaConfigurationError, match="connection 'octorpa_default'") as caught:
        hook.trigger({})
    assert message in str(caught.value)


def test_missing_connection_says_how_to_create_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OCTORPA_MISSING", raising=False)
    with pytest.raises(OctoRpaConfigurationError) as caught:
        OctoRpaHook("octorpa_missing").trigger({})
    assert "'octorpa_missing' is not defined" in str(caught.value)
    assert "AIRFLOW_CONN_OCTORPA_MISSING" in str(caught.value)


def test_connection_settings_defaults_and_extras(monkeypatch):
    hook = _set_conn(
        monkeypatch, connection_json("https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/AbC/invoke", "s3cret-value")
    )
    config = hook.get_conn()
    assert (config.url, config.timeout, config.rate_limits, config.bot_id) == (
        "https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/AbC/invoke",
        30.0,
        "5/second;20/minute",
        None,
    )
    assert (config.pool, config.pool_size, config.hold) == ("octorpa", 5, 15.0)
    assert "s3cret-value" not in repr(config)
    hook = _set_conn(
        monkeypatch,
        connection_json("https://h/x", "s", bot_id="r-1", timeout="12.5", rate_limits="5/second;20/minute"),
    )
    assert (hook.config.bot_id, hook.config.timeout) == ("r-1", 12.5)
    assert OctoRpaHook(timeout=3).config.timeout == 3.0


def test_an_unsigned_webhooks_id_is_written_only_as_a_digest(emulator, monkeypatch):
    """Without a secret the URL alone starts the app: its id stays out of records, lineage, messages."""
    import logging

    from airflow_octorpa.call_record import CallLedger

    url = emulator.webhook_url("order-processing")
    hook = _set_conn(monkeypatch, connection_json(url, None))
    config = hook.config
    assert config.webhook_label.startswith("sha256:") and "order-processing" not in config.webhook_label
    assert "order-processing" not in repr(config) and "order-processing" not in config.url_label
    signed = _set_conn(monkeypatch, connection_json(url, "a-secret"), conn_id="octorpa_signed").config
    assert signed.webhook_label == "order-processing"  # with a secret the id is no credential

    store = MemoryRecords()
    CallLedger(store, 1, logging.getLogger()).sending(config.webhook_label, None)
    assert "order-processing" not in json.dumps(store.value)

    # Nor does a refused connection's message show it.
    plain = _set_conn(monkeypatch, connection_json("http://h.example/api/v1/bots/webhooks/hook-7f3a/invoke", None))
    with pytest.raises(OctoRpaConfigurationError, match="plain http://") as caught:
        plain.config  # noqa: B018
    assert "hook-7f3a" not in str(caught.value)


def test_tls_verification_stays_on(monkeypatch):
    hook = _set_conn(monkeypatch, connection_json("https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/x/invoke", "s"))
    assert hook.session.verify is True


def test_uri_form_connection(emulator, monkeypatch):
    host, port = emulator.url.removeprefix("http://").split(":")
    uri = f"octorpa://:{ORDER_SECRET}@{host}:{port}/api%2Fv1%2Fbots%2Fwebhooks%2F{ORDER_WEBHOOK}%2Finvoke?scheme=http&bot_id=robot-warehouse-01"
    hook = _set_conn(monkeypatch, uri)
    assert hook.config.url == emulator.webhook_url(ORDER_WEBHOOK)
    assert hook.trigger({"订单号": "SO-URI"}).flow_process_no
    assert emulator.state.snapshot("calls")[0]["specified_bot"] == "robot-warehouse-01"


# -- test_connection never starts a run ---------------------------------------------------------


def test_a_port_that_repeats_the_urls_is_accepted(emulator, monkeypatch):
    url = emulator.webhook_url(ORDER_WEBHOOK)
    conn = json.loads(connection_json(url, ORDER_SECRET))
    hook = _set_conn(monkeypatch, json.dumps({**conn, "port": emulator.port}))
    assert hook.config.url == url and hook.trigger({"订单号": "P-1"}).flow_process_no


def test_test_connection_reaches_host_without_posting(emulator, order_conn):
    ok, message = OctoRpaHook(order_conn).test_connection()
    assert ok, message
    assert "No RPA run was started" in message
    assert emulator.state.snapshot("calls") == [] and emulator.state.snapshot("runs") == []


def test_test_connection_reports_unreachable_host_and_bad_config(monkeypatch):
    hook = _set_conn(monkeypatch, connection_json(f"http://127.0.0.1:{free_port()}/x", "s"))
    ok, message = hook.test_connection()
    assert not ok and "did not answer" in message
    hook = _set_conn(monkeypatch, connection_json("mailto:someone", "s"))
    ok, message = hook.test_connection()
    assert not ok and "not a URL with a valid port" in message


def test_test_connection_sends_no_post(monkeypatch):
    answer = CannedAnswer(status=405)
    with canned_server(answer) as url:
        ok, _ = _set_conn(monkeypatch, connection_json(url, "s")).test_connection()
    assert ok and [method for method, _ in answer.requests] == ["HEAD"]


@pytest.mark.parametrize(
    ("status", "ok", "says"),
    [
        (405, True, "HTTP 405"),
        (401, True, "HTTP 401"),
        (404, False, "no webhook is served there"),
        (410, False, "no webhook is served there"),
        (301, False, "redirects"),
        (503, False, "the server failed"),
    ],
)
def test_test_connection_judges_the_answer(monkeypatch, status, ok, says):
    answer = CannedAnswer(status=status, headers={"Location": "https://elsewhere.example/"})
    with canned_server(answer) as url:
        result, message = _set_conn(monkeypatch, connection_json(url, "s")).test_connection()
    assert (result, says in message) == (ok, True), message
    assert "elsewhere.example" not in message  # a probe never relays what the probed host says
    assert [method for method, _ in answer.requests] == ["HEAD"]
