"""The webhook call's body: the app's parameters checked for JSON, and the vendor's signature."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_octorpa.checks import lone_surrogate_at
from airflow_octorpa.exceptions import OctoRpaConfigurationError, OctoRpaInvalidParamsError

# The vendor documents no size limit; an RPA app's input variables are small, and a body this big
# is a mistake (a whole file passed by value) that is better refused before it is sent.
MAX_BODY_BYTES = 1024 * 1024


def sign(timestamp: str, secret: str) -> str:
    """Return the vendor's signature for ``timestamp`` and ``secret``.

    Base64(HMAC-SHA256(key = timestamp + "\\n" + secret, message = empty)), key UTF-8, exactly as
    the vendor's samples compute it (the secret is part of the key; the message is empty).
    """
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


# How deep app_params may nest. An RPA app's input variables are flat or nearly so; deeper (or a
# mapping that contains itself) is a mistake, refused with a message instead of a RecursionError.
MAX_PARAMS_DEPTH = 32


def _check_json_value(value: Any, path: str, depth: int = 0) -> None:
    """Raise when ``value`` cannot travel as JSON with its type intact (``path`` names it)."""
    if depth > MAX_PARAMS_DEPTH:
        raise OctoRpaInvalidParamsError(
            f"app_params{path[:200]} nests more than {MAX_PARAMS_DEPTH} levels deep, or contains itself. Pass "
            "the app's input variables as a flat mapping of names to values."
        )
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        if value.bit_length() > 64 * 8:  # Python refuses to write ints past 4300 digits as text
            raise OctoRpaInvalidParamsError(
                f"app_params{path} is an integer of {value.bit_length()} bits, too large to send as a JSON "
                "number. Send it as a string."
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OctoRpaInvalidParamsError(
                f"app_params{path} is {value!r}, which JSON cannot carry. Send a finite number, "
                "or None for an empty value."
            )
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise OctoRpaInvalidParamsError(
                    f"app_params{path} has the key {key!r:.80} of type {type(key).__name__}; JSON object "
                    "keys must be strings. Convert it with str() before passing it."
                )
            _check_text(key, f"{path} key {key!r:.80}")
            _check_json_value(item, f"{path}[{key!r:.80}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]", depth + 1)
        return
    raise OctoRpaInvalidParamsError(
        f"app_params{path} is a {type(value).__name__} ({value!r:.80}), which JSON cannot carry. "
        "Convert it to a string, number, boolean, list or mapping before passing it "
        "(for example a datetime with .isoformat(), a Decimal with str() or float())."
    )


def _check_text(text: str, path: str) -> None:
    """Text must be valid Unicode: a lone surrogate cannot be sent as UTF-8."""
    if (at := lone_surrogate_at(text)) is not None:
        raise OctoRpaInvalidParamsError(
            f"app_params{path} holds the lone surrogate {text[at]!r} at position {at}, which is "
            "not valid Unicode and cannot be sent as UTF-8. Fix the decoding where the value comes from."
        )


def validate_app_params(app_params: Any) -> dict[str, Any]:
    """Return ``app_params`` as a dict once it is known to serialise to JSON unchanged."""
    if app_params is None:
        return {}
    if not isinstance(app_params, Mapping):
        raise OctoRpaInvalidParamsError(
            f"app_params must be a mapping of the app's input variable names to values, got a "
            f"{type(app_params).__name__}: {app_params!r:.120}."
        )
    _check_json_value(app_params, "")
    return dict(app_params)


def build_payload(
    app_params: Mapping[str, Any] | None,
    *,
    secret: str | None,
    bot_id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Build the webhook body: ``sign``, ``params``, ``timestamp`` and, when set, ``SpecifiedBot``.

    ``sign`` is empty when there is no secret (the trigger's signature check is off).
    """
    params = validate_app_params(app_params)
    if bot_id is not None and (not isinstance(bot_id, str) or lone_surrogate_at(bot_id) is not None):
        raise OctoRpaConfigurationError(
            f"bot_id must be a string of valid Unicode (the robot id from the Octopus RPA console), got "
            f"{type(bot_id).__name__}: {bot_id!r:.80}."
        )
    timestamp = timestamp if timestamp is not None else str(int(time.time()))
    body: dict[str, Any] = {
        "sign": sign(timestamp, secret) if secret else "",
        "params": params,
        "timestamp": timestamp,
    }
    if bot_id:
        body["SpecifiedBot"] = bot_id
    return body


@dataclass(frozen=True)
class PreparedCall:
    """A checked call: the app's parameters and the robot, ready to be signed and sent."""

    params: dict[str, Any]
    bot_id: str | None


def prepare_call(app_params: Mapping[str, Any] | None, bot_id: str | None) -> PreparedCall:
    """Check a call once (types, text, size); :func:`signed_body` then only adds the signature."""
    body = build_payload(app_params, secret=None, bot_id=bot_id)
    size = len(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    if size > MAX_BODY_BYTES:
        raise OctoRpaInvalidParamsError(
            f"app_params make a request body of {size} bytes, over this provider's limit of "
            f"{MAX_BODY_BYTES} bytes. Pass a reference (a file path or URL the app can read) instead "
            "of the content itself."
        )
    return PreparedCall(params=body["params"], bot_id=body.get("SpecifiedBot"))


def signed_body(call: PreparedCall, secret: str) -> bytes:
    """The request body of a checked call, signed now."""
    timestamp = str(int(time.time()))
    body: dict[str, Any] = {
        "sign": sign(timestamp, secret) if secret else "",
        "params": call.params,
        "timestamp": timestamp,
    }
    if call.bot_id:
        body["SpecifiedBot"] = call.bot_id
    return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
