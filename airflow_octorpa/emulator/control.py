"""The emulator's control API: what a request to ``/_emulator/...`` may ask, checked."""

from __future__ import annotations

import json
from typing import Any

from limits import parse_many

from airflow_octorpa.emulator.account import EmulatorState
from airflow_octorpa.emulator.config import CallbackSpec, WebhookSpec
from airflow_octorpa.emulator.faults import Fault


class BadRequest(Exception):
    """A request the emulator itself cannot take (its control routes, a broken body): 400 or 413."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest(400, "The body is not UTF-8 JSON (or nests too deeply).") from None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest(400, f"{what} must be a JSON object.")
    return body


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(400, f"{name} must be a number from {low:g} to {high:g}, got {value!r:.60}.")
    return float(value)


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(400, f"{name} must be a whole number from {low} to {high}, got {value!r:.60}.")
    return value


def settings_from(body: Any) -> dict[str, Any]:
    """``{"rate_limits": "5/second;20/minute", "timestamp_tolerance": 3600}``, either or both."""
    body = _object(body, "settings")
    unknown = set(body) - {"rate_limits", "timestamp_tolerance"}
    if unknown:
        raise BadRequest(400, f"Unknown settings {sorted(unknown)!r:.200}.")
    settings: dict[str, Any] = {}
    if "rate_limits" in body:
        limits = body["rate_limits"]
        try:
            items = parse_many(limits) if isinstance(limits, str) else []
        except ValueError:
            items = []
        if not items or any(item.amount < 1 or item.get_expiry() <= 0 for item in items):
            raise BadRequest(400, f"rate_limits {limits!r:.80} is not a list of limits like '5/second;20/minute'.")
        settings["rate_limits"] = limits
    if "timestamp_tolerance" in body:
        settings["timestamp_tolerance"] = _whole(body["timestamp_tolerance"], "timestamp_tolerance", 0, 86400 * 366)
    return settings


MAX_FAULT_COUNT = 1000


def faults_from(body: Any) -> list[dict[str, Any]]:
    """``{"faults": [{"kind": ..., "status": ..., "seconds": ..., "count": ...}, ...]}``, checked."""
    faults = _object(body, "the faults request").get("faults", [])
    if not isinstance(faults, list) or len(faults) > MAX_FAULT_COUNT:
        raise BadRequest(400, f"faults must be a list of at most {MAX_FAULT_COUNT} faults.")
    total = 0
    for fault in faults:
        fault = _object(fault, "each fault")
        if "count" in fault:
            total += _whole(fault["count"], "count", 1, MAX_FAULT_COUNT)
        else:
            total += 1
        if "status" in fault:
            _whole(fault["status"], "status", 100, 599)
        if "seconds" in fault:
            _number(fault["seconds"], "seconds", 0, 600)
        try:
            Fault.from_dict(fault)
        except (KeyError, ValueError, TypeError) as err:
            raise BadRequest(400, f"bad fault {fault!r:.120}: {err}") from None
    if total > MAX_FAULT_COUNT:
        raise BadRequest(400, f"at most {MAX_FAULT_COUNT} faults can be queued at once, not {total}.")
    return faults


def random_faults_from(body: Any) -> dict[str, Any] | None:
    """``null`` (off) or ``{"seed", "rate_limit", "unknown", "status_before_start", "delay"}``, checked."""
    if body is None or body == {}:
        return None
    body = _object(body, "random-faults")
    unknown = set(body) - {"seed", "rate_limit", "unknown", "status_before_start", "delay"}
    if unknown:
        raise BadRequest(400, f"Unknown random-faults keys {sorted(unknown)!r:.200}.")
    for rate in ("rate_limit", "unknown", "status_before_start"):
        if rate in body:
            _number(body[rate], rate, 0, 1)
    if sum(float(body.get(rate, 0)) for rate in ("rate_limit", "unknown", "status_before_start")) > 1:
        raise BadRequest(400, "The fault rates add up to more than 1.")
    if "seed" in body:
        _whole(body["seed"], "seed", -(2**63), 2**63)
    if "delay" in body:
        _number(body["delay"], "delay", 0, 600)
    return body


def webhook_update(state: EmulatorState, webhook_id: str, body: Any) -> WebhookSpec:
    """A new webhook, or an existing one with the fields given (the rest kept as they were)."""
    body = _object(body, "the webhook")
    existing = state.config.webhooks.get(webhook_id)
    merged: dict[str, Any] = {}
    if existing is not None:
        merged = {
            "robot": existing.robot,
            "secret": existing.secret,
            "enabled": existing.enabled,
            "callback": existing.callback.to_dict() if existing.callback else None,
            "app": {
                "name": existing.app.name,
                "inputs": existing.app.inputs,
                "flow_id": existing.app.flow_id,
                "behaviour": existing.app.behaviour,
            },
        }
    for key, value in body.items():
        if key == "app":
            merged["app"] = {**merged.get("app", {}), **_object(value, "app")}
        else:
            merged[key] = value
    checks = {"robot": str, "secret": (str, type(None)), "enabled": bool}
    for key, kinds in checks.items():
        if key in merged and not isinstance(merged[key], kinds):  # type: ignore[arg-type]
            raise BadRequest(400, f"{key} has the wrong type: {merged[key]!r:.60}.")
    if merged.get("callback") is not None:
        try:
            CallbackSpec.from_dict(_object(merged["callback"], "callback"))
        except (TypeError, ValueError) as err:
            raise BadRequest(400, f"bad callback: {err}") from None
    unknown = set(merged) - {"robot", "secret", "enabled", "app", "id", "callback"}
    if unknown:
        raise BadRequest(400, f"Unknown webhook fields {sorted(unknown)!r:.200}.")
    if "robot" not in merged:
        raise BadRequest(400, f"A new webhook needs a robot: {{'robot': ...}} (no webhook {webhook_id!r} yet).")
    app = merged.get("app", {})
    if not isinstance(app.get("inputs", {}), dict):
        raise BadRequest(400, "app.inputs must be a JSON object of input variables and their defaults.")
    if app.get("behaviour") not in (None, "vendor_example"):
        raise BadRequest(400, "app.behaviour must be null or 'vendor_example'.")
    return WebhookSpec.from_dict({**merged, "id": webhook_id})


def schedule_from(body: Any) -> tuple[str, dict[str, Any], int, float]:
    """``{"inbox_url": "http://.../octorpa/v1/inbox/<token>", "params": {...}, "count": 3, "every": 5}``:
    the URL the app's last step reports to, its input variables, how many runs and how far apart."""
    body = _object(body, "a schedule")
    unknown = set(body) - {"inbox_url", "params", "count", "every"}
    if unknown:
        raise BadRequest(400, f"Unknown schedule fields {sorted(unknown)!r:.200}.")
    url = body.get("inbox_url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise BadRequest(400, "inbox_url must be the http(s) URL `octorpa inbox create` printed.")
    params = _object(body.get("params", {}), "params")
    return url, params, _whole(body.get("count", 1), "count", 1, 1000), _number(body.get("every", 1), "every", 0, 3600)
