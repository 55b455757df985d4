"""The vendor's signing scheme: its published test vector, and properties over any input."""

from __future__ import annotations

import base64
import json
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_octorpa.emulator import expected_sign
from airflow_octorpa.hooks.octorpa import build_payload, sign

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def test_vendor_test_vector():
    assert sign("1700000000", "SEC123") == "j/tImR0k8vYXRsYw0+GHVQkV1v/J/8obOuMU7PE/KDo="


def test_secret_is_the_key_and_the_message_is_empty():
    import hashlib
    import hmac

    digest = hmac.new(b"1700000000\nSEC123", b"", hashlib.sha256).digest()
    assert sign("1700000000", "SEC123") == base64.b64encode(digest).decode()


@given(timestamp=st.integers(0, 2**40).map(str), secret=st.text(min_size=1))
def test_sign_matches_the_services_check_for_any_unicode_secret(timestamp, secret):
    signature = sign(timestamp, secret)
    assert len(base64.b64decode(signature, validate=True)) == 32
    assert signature == expected_sign(timestamp, secret)


@settings(max_examples=200)
@given(
    params=st.dictionaries(st.text(), json_values, max_size=6),
    secret=st.text(min_size=1),
    bot=st.none() | st.text(min_size=1),
)
def test_body_round_trips_through_json_with_types_intact(params, secret, bot):
    timestamp = str(int(time.time()))
    body = build_payload(params, secret=secret, bot_id=bot, timestamp=timestamp)
    sent = json.loads(json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8").decode("utf-8"))
    assert sent["params"] == params
    assert sent["sign"] == expected_sign(timestamp, secret)
    assert sent.get("SpecifiedBot") == (bot or None)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    params=st.dictionaries(st.text(min_size=1), json_values, max_size=5),
    secret=st.text(min_size=1).filter(lambda s: "\x00" not in s),
    robot=st.none() | st.just("robot-warehouse-01"),
)
def test_any_unicode_call_passes_the_services_verification(emulator, forget_masked_secrets, params, secret, robot):
    """Through HTTP: the emulator checks the signature itself and records exactly what it read."""
    import os

    from airflow_octorpa.emulator import WebhookSpec
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    emulator.state.reset()
    emulator.state.put_webhook(
        WebhookSpec.from_dict({"id": "prop", "robot": "robot-warehouse-01", "secret": secret, "app": {"inputs": {}}})
    )
    emulator.state.configure(rate_limits="1000000/second")
    os.environ["AIRFLOW_CONN_OCTORPA_PROP"] = json.dumps(
        {
            "conn_type": "octorpa",
            "host": emulator.webhook_url("prop"),
            "password": secret,
            "extra": {"rate_limits": "1000000/second"},
        }
    )
    try:
        result = OctoRpaHook("octorpa_prop").trigger(params, bot_id=robot)
    finally:
        del os.environ["AIRFLOW_CONN_OCTORPA_PROP"]
        emulator.state.configure(rate_limits="5/second;20/minute")
    (call,) = emulator.state.snapshot("calls")
    assert call["status"] == 200 and result.flow_process_no == call["flow_process_no"]
    assert call["params"] == params
    assert call["specified_bot"] == robot
