"""A local stand-in for the Octopus RPA webhook service, faithful to the vendor's documented contract.

Where the vendor documents nothing (codes for a disabled trigger or unknown robot, the rate-limit
answer), the emulator answers in the vendor's error shape with codes of its own, named in the
README; tests of the provider must not rely on those codes being the vendor's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import math
import re
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from limits import parse_many, storage, strategies

from airflow_octorpa.emulator.config import CallbackSpec, EmulatorConfig, WebhookSpec, default_config
from airflow_octorpa.emulator.faults import Fault, FaultPlan

log = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/api/v1/bots/webhooks/(?P<id>[^/]+)/invoke/?$")
CONTROL_PREFIX = "/_emulator"
# .NET ticks (100 ns since 0001-01-01) at the Unix epoch: the vendor's flowProcessNo looks like ticks.
_TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
_RATE_LIMIT_KEY = "account"  # one budget for the whole account, as docs/pages/rate-limits.md assumes


# The largest request body the emulator reads (the provider refuses bodies over 1 MiB).
MAX_REQUEST_BYTES = 2 * 1024 * 1024


class _BadRequest(Exception):
    """A request the emulator itself cannot take (its control routes, a broken body): 400 or 413."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


def _json_body(raw: bytes) -> Any:
    if not raw.strip():
        return {}
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _BadRequest(400, "The body is not UTF-8 JSON (or nests too deeply).") from None


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest(400, f"{what} must be a JSON object.")
    return body


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _BadRequest(400, f"{name} must be a number from {low:g} to {high:g}, got {value!r:.60}.")
    return float(value)


def _whole(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadRequest(400, f"{name} must be a whole number from {low} to {high}, got {value!r:.60}.")
    return value


def settings_from(body: Any) -> dict[str, Any]:
    """``{"rate_limits": "5/second;20/minute", "timestamp_tolerance": 3600}``, either or both."""
    body = _object(body, "settings")
    unknown = set(body) - {"rate_limits", "timestamp_tolerance"}
    if unknown:
        raise _BadRequest(400, f"Unknown settings {sorted(unknown)!r:.200}.")
    settings: dict[str, Any] = {}
    if "rate_limits" in body:
        limits = body["rate_limits"]
        try:
            items = parse_many(limits) if isinstance(limits, str) else []
        except ValueError:
            items = []
        if not items or any(item.amount < 1 or item.get_expiry() <= 0 for item in items):
            raise _BadRequest(400, f"rate_limits {limits!r:.80} is not a list of limits like '5/second;20/minute'.")
        settings["rate_limits"] = limits
    if "timestamp_tolerance" in body:
        settings["timestamp_tolerance"] = _whole(body["timestamp_tolerance"], "timestamp_tolerance", 0, 86400 * 366)
    return settings


MAX_FAULT_COUNT = 1000


def faults_from(body: Any) -> list[dict[str, Any]]:
    """``{"faults": [{"kind": ..., "status": ..., "seconds": ..., "count": ...}, ...]}``, checked."""
    faults = _object(body, "the faults request").get("faults", [])
    if not isinstance(faults, list) or len(faults) > MAX_FAULT_COUNT:
        raise _BadRequest(400, f"faults must be a list of at most {MAX_FAULT_COUNT} faults.")
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
            raise _BadRequest(400, f"bad fault {fault!r:.120}: {err}") from None
    if total > MAX_FAULT_COUNT:
        raise _BadRequest(400, f"at most {MAX_FAULT_COUNT} faults can be queued at once, not {total}.")
    return faults


def random_faults_from(body: Any) -> dict[str, Any] | None:
    """``null`` (off) or ``{"seed", "rate_limit", "unknown", "status_before_start", "delay"}``, checked."""
    if body is None or body == {}:
        return None
    body = _object(body, "random-faults")
    unknown = set(body) - {"seed", "rate_limit", "unknown", "status_before_start", "delay"}
    if unknown:
        raise _BadRequest(400, f"Unknown random-faults keys {sorted(unknown)!r:.200}.")
    for rate in ("rate_limit", "unknown", "status_before_start"):
        if rate in body:
            _number(body[rate], rate, 0, 1)
    if sum(float(body.get(rate, 0)) for rate in ("rate_limit", "unknown", "status_before_start")) > 1:
        raise _BadRequest(400, "The fault rates add up to more than 1.")
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
            raise _BadRequest(400, f"{key} has the wrong type: {merged[key]!r:.60}.")
    if merged.get("callback") is not None:
        try:
            CallbackSpec.from_dict(_object(merged["callback"], "callback"))
        except (TypeError, ValueError) as err:
            raise _BadRequest(400, f"bad callback: {err}") from None
    unknown = set(merged) - {"robot", "secret", "enabled", "app", "id", "callback"}
    if unknown:
        raise _BadRequest(400, f"Unknown webhook fields {sorted(unknown)!r:.200}.")
    if "robot" not in merged:
        raise _BadRequest(400, f"A new webhook needs a robot: {{'robot': ...}} (no webhook {webhook_id!r} yet).")
    app = merged.get("app", {})
    if not isinstance(app.get("inputs", {}), dict):
        raise _BadRequest(400, "app.inputs must be a JSON object of input variables and their defaults.")
    if app.get("behaviour") not in (None, "vendor_example"):
        raise _BadRequest(400, "app.behaviour must be null or 'vendor_example'.")
    return WebhookSpec.from_dict({**merged, "id": webhook_id})


class _Refusal(Exception):
    """A call the service refuses, in the vendor's failure shape."""

    def __init__(self, status: int, code: str, description: str, retry_after: int | None = None):
        super().__init__(code)
        self.status = status
        self.code = code
        self.description = description
        self.retry_after = retry_after


@dataclass
class Answer:
    """What the handler does with a call: send ``status``/``payload``, maybe late, or reset."""

    status: int
    payload: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False


_GATEWAY_PAGE = "<html><head><title>{status}</title></head><body><h1>{status} Bad Gateway</h1><hr>nginx</body></html>"


def expected_sign(timestamp: str, secret: str) -> str:
    """The signature the service expects (written apart from the hook's, as the vendor's is)."""
    digest = hmac.new((timestamp + "\n" + secret).encode("utf-8"), None, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class EmulatorState:
    """The emulated account: configuration, rate-limit windows and the record of calls and runs."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._limits = parse_many(config.rate_limits)
        self._storage = storage.MemoryStorage()
        self._limiter = strategies.MovingWindowRateLimiter(self._storage)
        self._seq = itertools.count(1)
        self._last_ticks = 0
        self.calls: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.faults = FaultPlan()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.runs.clear()
            self._storage.reset()
        self.faults.clear()

    def configure(self, *, rate_limits: str | None = None, timestamp_tolerance: int | None = None) -> None:
        """Change the account's limits or timestamp window; new limits start with empty windows."""
        with self._lock:
            if rate_limits is not None:
                self._limits = parse_many(rate_limits)
                self.config.rate_limits = rate_limits
                self._storage.reset()
            if timestamp_tolerance is not None:
                self.config.timestamp_tolerance = int(timestamp_tolerance)

    def put_webhook(self, spec: WebhookSpec) -> None:
        with self._lock:
            self.config.webhooks[spec.id] = spec
            self.config.robots.add(spec.robot)

    def snapshot(self, what: str) -> list[dict[str, Any]]:
        with self._lock:
            return json.loads(json.dumps(getattr(self, what), ensure_ascii=False))

    def public_config(self) -> dict[str, Any]:
        """The configuration without secrets (only whether each webhook has one)."""
        with self._lock:
            return {
                "enterprise_id": self.config.enterprise_id,
                "rate_limits": self.config.rate_limits,
                "timestamp_tolerance": self.config.timestamp_tolerance,
                "robots": sorted(self.config.robots),
                "webhooks": [
                    {
                        "id": w.id,
                        "robot": w.robot,
                        "enabled": w.enabled,
                        "signed": w.secret is not None,
                        "app": {"name": w.app.name, "flow_id": w.app.flow_id, "inputs": w.app.inputs},
                    }
                    for w in self.config.webhooks.values()
                ],
            }

    def record_dropped(self, webhook_id: str) -> None:
        """Record a call whose connection was reset before its request was read."""
        with self._lock:
            self.calls.append(
                {
                    "webhook_id": webhook_id,
                    "received_at": time.time(),
                    "seq": next(self._seq),
                    "status": None,
                    "code": None,
                    "fault": "drop_before_read",
                }
            )

    def invoke(self, webhook_id: str, raw_body: bytes, fault: Fault | None = None) -> Answer:
        """Handle one webhook call, with an injected ``fault`` if any, and record it."""
        received_at = time.time()
        call: dict[str, Any] = {"webhook_id": webhook_id, "received_at": received_at}
        if fault is not None:
            call["fault"] = fault.kind
        with self._lock:
            call["seq"] = next(self._seq)
            try:
                body = self._parse_body(raw_body, call)
                webhook = self._webhook(webhook_id)
                if fault is not None and not fault.starts_run:
                    return self._refuse(call, self._injected_refusal(fault), html=fault.kind == "html")
                self._take_rate_limit()
                self._check_signature(webhook, body, received_at)
                run = self._start_run(webhook, body, received_at)
            except _Refusal as refusal:
                return self._refuse(call, refusal)
            self.runs.append(run)
            self._schedule_callback(webhook, run)
            answer = Answer(
                200,
                {
                    "enterpriseId": self.config.enterprise_id,
                    "flowId": webhook.app.flow_id,
                    "flowProcessNo": run["flow_process_no"],
                },
            )
            if fault is not None:  # the run has started; now the answer goes wrong
                if fault.kind == "delay_after_start":
                    answer.delay = fault.seconds
                elif fault.kind == "reset_after_start":
                    answer.status, answer.reset = 0, True
                else:
                    answer.status, answer.payload = (
                        fault.status or 502,
                        _GATEWAY_PAGE.format(status=fault.status or 502),
                    )
            call.update(status=answer.status or None, code=None, flow_process_no=run["flow_process_no"])
            self.calls.append(call)
            return answer

    def _schedule_callback(self, webhook: WebhookSpec, run: dict[str, Any]) -> None:
        """As the app's last step: request the callback URL it was given, ``after`` seconds on."""
        spec = webhook.callback
        url = run["params"].get(spec.param) if spec is not None else None
        if spec is None or not isinstance(url, str) or spec.fault == "never":
            return
        run["callback"] = {"reports": []}
        timer = threading.Timer(spec.after, self._report, args=(spec, url, run))
        timer.daemon = True
        timer.start()

    def _report(self, spec: CallbackSpec, url: str, run: dict[str, Any]) -> None:
        import requests

        if spec.fault == "forged":
            url = url[:-43] + "F" * 43  # the right record, the wrong secret
        reports = [(spec.status, spec.outputs, spec.message)]
        if spec.fault == "twice":
            reports.append(reports[0])
        elif spec.fault == "contradiction":
            reports.append(("failed" if spec.status == "succeeded" else "succeeded", {}, "contradiction"))
        session = requests.Session()
        session.trust_env = False  # the app reaches Airflow directly
        for status, outputs, message in reports:
            try:
                if spec.method == "GET":
                    answer = session.get(url, params={"status": status, "message": message}, timeout=30)
                else:
                    answer = session.post(
                        url, json={"status": status, "outputs": outputs, "message": message}, timeout=30
                    )
                seen: dict[str, Any] = {"status_code": answer.status_code, "body": answer.text[:500]}
            except requests.RequestException as err:
                seen = {"status_code": None, "error": type(err).__name__}
            with self._lock:
                run["callback"]["reports"].append({**seen, "sent_at": time.time(), "status": status})

    def _refuse(self, call: dict[str, Any], refusal: _Refusal, html: bool = False) -> Answer:
        call.update(status=refusal.status, code=refusal.code)
        self.calls.append(call)
        headers = {"Retry-After": str(refusal.retry_after)} if refusal.retry_after is not None else {}
        payload = _GATEWAY_PAGE.format(status=refusal.status) if html else self._failure(refusal)
        return Answer(refusal.status, payload, headers)

    @staticmethod
    def _injected_refusal(fault: Fault) -> _Refusal:
        if fault.kind == "rate_limit":
            return _Refusal(429, "TooManyRequests", "Rate limit exceeded (injected).", retry_after=1)
        return _Refusal(fault.status or 503, "ServiceUnavailable", "The service is unavailable (injected).")

    @staticmethod
    def _failure(refusal: _Refusal) -> dict[str, Any]:
        return {"code": refusal.code, "description": refusal.description, "requestId": uuid.uuid4().hex}

    @staticmethod
    def _parse_body(raw_body: bytes, call: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = json.loads(raw_body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise _Refusal(400, "InvalidRequestBody", "The body is not UTF-8 JSON (or nests too deeply).") from None
        if not isinstance(parsed, dict):
            raise _Refusal(400, "InvalidRequestBody", "The body must be a JSON object.")
        # The service reads field names case-insensitively (the vendor's C#/Java send PascalCase).
        body = {str(k).lower(): v for k, v in parsed.items()}
        # Recorded for tests and the demo; the sign value itself is never kept.
        call.update(
            field_names=sorted(parsed),
            timestamp=body.get("timestamp"),
            signed=bool(body.get("sign")),
            params=body.get("params"),
            specified_bot=body.get("specifiedbot"),
        )
        return body

    def _webhook(self, webhook_id: str) -> WebhookSpec:
        webhook = self.config.webhooks.get(webhook_id)
        if webhook is None:
            raise _Refusal(404, "WebhookNotFound", f"No webhook trigger has the id {webhook_id!r}.")
        if not webhook.enabled:
            raise _Refusal(400, "WebhookDisabled", "The webhook trigger is not enabled (启动触发器).")
        return webhook

    def _take_rate_limit(self) -> None:
        if all(self._limiter.test(limit, _RATE_LIMIT_KEY) for limit in self._limits):
            for limit in self._limits:
                self._limiter.hit(limit, _RATE_LIMIT_KEY)
            return
        reset_at = max(
            self._limiter.get_window_stats(limit, _RATE_LIMIT_KEY).reset_time
            for limit in self._limits
            if not self._limiter.test(limit, _RATE_LIMIT_KEY)
        )
        raise _Refusal(
            429,
            "TooManyRequests",
            f"Rate limit {self.config.rate_limits} exceeded.",
            retry_after=max(1, math.ceil(reset_at - time.time())),
        )

    def _check_signature(self, webhook: WebhookSpec, body: dict[str, Any], now: float) -> None:
        if webhook.secret is None:
            return  # the trigger's signature check is off: sign is ignored
        refusal = _Refusal(
            400,
            "SignatureVerificationFailureOrTimestampExpired",
            "Signature verification failed or the timestamp expired.",
        )
        timestamp, sent_sign = body.get("timestamp"), body.get("sign")
        if not isinstance(timestamp, (str, int)) or not isinstance(sent_sign, str):
            raise refusal
        try:
            seconds = int(timestamp)
        except ValueError:
            raise refusal from None
        if abs(now - seconds) > self.config.timestamp_tolerance:
            raise refusal
        if not hmac.compare_digest(sent_sign, expected_sign(str(timestamp), webhook.secret)):
            raise refusal

    def _start_run(self, webhook: WebhookSpec, body: dict[str, Any], now: float) -> dict[str, Any]:
        params = body.get("params")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise _Refusal(400, "InvalidParams", "params must be a JSON object of input variables.")
        robot = body.get("specifiedbot") or webhook.robot
        if not isinstance(robot, str) or robot not in self.config.robots:
            raise _Refusal(400, "RobotNotFound", f"No robot has the id {robot!r}.")
        inputs = {**webhook.app.inputs, **{k: v for k, v in params.items() if k in webhook.app.inputs}}
        run = {
            "flow_process_no": self._next_flow_process_no(now),
            "flow_id": webhook.app.flow_id,
            "webhook_id": webhook.id,
            "app": webhook.app.name,
            "robot": robot,
            "started_at": now,
            "params": params,
            "inputs": inputs,
            "ignored_params": sorted(k for k in params if k not in webhook.app.inputs),
            "status": "started",
        }
        if webhook.app.behaviour == "vendor_example":
            run.update(_vendor_example_messages(inputs))
        return run

    def _next_flow_process_no(self, now: float) -> str:
        ticks = max(_TICKS_AT_UNIX_EPOCH + int(now * 10_000_000), self._last_ticks + 1)
        self._last_ticks = ticks
        return str(ticks)


def _vendor_example_messages(inputs: dict[str, Any]) -> dict[str, Any]:
    """The vendor page's sample app: a box titled 变量1 showing 变量2, then "计算" with 变量3 halved.

    The page shows 5 for 变量3 = 10; halving is the plainest rule that matches it.
    """
    first = {"title": str(inputs["变量1"]), "text": str(inputs["变量2"])}
    value = inputs["变量3"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return {"status": "failed", "messages": [first], "error": f"变量3 is not a number: {value!r}"}
    half = value / 2
    shown = int(half) if float(half).is_integer() else half
    return {"messages": [first, {"title": "计算", "text": str(shown)}]}


class _Handler(BaseHTTPRequestHandler):
    server: EmulatorHTTPServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, a keep-alive client waits for the
    # delayed ACK (40 ms) on every call.
    disable_nagle_algorithm = True
    # A client that opens a request and stops sending is dropped after this many seconds, instead
    # of keeping a thread forever.
    timeout = 10.0

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        if isinstance(payload, str):  # an HTML page
            data, content_type = payload.encode("utf-8"), "text/html; charset=utf-8"
        else:
            data, content_type = (
                json.dumps(payload, ensure_ascii=False).encode("utf-8"),
                "application/json; charset=utf-8",
            )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        """The request's body; a Content-Length that is no count or too large is a bad request."""
        text = (self.headers.get("Content-Length") or "0").strip()
        if not (text.isascii() and text.isdigit()):
            raise _BadRequest(400, f"Content-Length {text[:40]!r} is not a byte count.")
        if int(text) > MAX_REQUEST_BYTES:
            raise _BadRequest(413, f"The body is over {MAX_REQUEST_BYTES} bytes.")
        length = int(text)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            if match := INVOKE_PATH.match(path):
                self._invoke(self.server.state, match["id"])
            elif path.startswith(CONTROL_PREFIX + "/"):
                self._send(200, self._control(path))
            else:
                self._send(404, {"code": "NotFound", "description": f"No route for POST {path[:200]}."})
        except _BadRequest as bad:
            self.close_connection = True  # the rest of a refused body is not read
            self._send(bad.status, {"code": "BadRequest", "description": bad.description})

    def _control(self, path: str) -> Any:
        """The emulator's own routes: every bad value is a 400 naming it; nothing changes then."""
        state = self.server.state
        name, _, arg = path[len(CONTROL_PREFIX) + 1 :].partition("/")
        if name == "reset" and not arg:
            self._read_body()
            state.reset()
            return {"reset": True}
        body = _json_body(self._read_body())
        if name == "settings" and not arg:
            state.configure(**settings_from(body))
            return state.public_config()
        if name == "faults" and arg:
            faults = faults_from(body)
            state.faults.queue(arg, faults)
            return {"queued": sum(int(f.get("count", 1)) for f in faults)}
        if name == "random-faults" and not arg:
            state.faults.set_random(random_faults_from(body))
            return {"random_faults": body}
        if name == "webhooks" and arg:
            state.put_webhook(webhook_update(state, arg, body))
            return {"webhook": arg}
        raise _BadRequest(404, f"No route for POST {path[:200]}.")

    def _invoke(self, state: EmulatorState, webhook_id: str) -> None:
        fault = state.faults.take(webhook_id)
        if fault is not None and fault.kind == "drop_before_read":
            state.record_dropped(webhook_id)
            self._reset_connection()
            return
        try:
            body = self._read_body()
        except _BadRequest:
            state.faults.put_back(webhook_id, fault)
            raise
        answer = state.invoke(webhook_id, body, fault)
        if answer.delay:
            time.sleep(answer.delay)
        if answer.reset:
            self._reset_connection()
            return
        try:
            self._send(answer.status, answer.payload, answer.headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a delayed answer): the run started all the same

    def _reset_connection(self) -> None:
        """Close with RST (SO_LINGER 0): the client sees a reset, not a clean end of answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def do_GET(self) -> None:  # noqa: N802
        state = self.server.state
        path = self.path.split("?", 1)[0]
        routes = {
            f"{CONTROL_PREFIX}/health": lambda: {"status": "ok"},
            f"{CONTROL_PREFIX}/calls": lambda: state.snapshot("calls"),
            f"{CONTROL_PREFIX}/runs": lambda: state.snapshot("runs"),
            f"{CONTROL_PREFIX}/config": state.public_config,
        }
        if path in routes:
            self._send(200, routes[path]())
        elif INVOKE_PATH.match(path):
            # A webhook only takes POST; answering lets a connection test reach it safely.
            self._send(405, {"code": "MethodNotAllowed", "description": "Use POST."}, {"Allow": "POST"})
        else:
            self._send(404, {"code": "NotFound", "description": f"No route for GET {path}."})

    do_HEAD = do_GET


class EmulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: EmulatorState) -> None:
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        self.state = state


def binding_warning(host: str) -> str | None:
    """A warning when ``host`` is not a loopback address: the emulator has no authentication."""
    from airflow_octorpa.checks import is_loopback_host

    if is_loopback_host(host):
        return None
    return (
        f"The emulator binds {host!r}, not a loopback address: anyone who reaches it can read its calls and "
        "change its webhooks and faults (it has no authentication). Bind 127.0.0.1 unless you mean it."
    )


class OctoRpaEmulator:
    """Run the emulator in a background thread; ``with OctoRpaEmulator() as emu: emu.webhook_url(...)``."""

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        if warning := binding_warning(host):
            log.warning(warning)
        self.state = EmulatorState(config or default_config())
        self._server = EmulatorHTTPServer((host, port), self.state)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        host = host if isinstance(host, str) else host.decode()
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def webhook_url(self, webhook_id: str) -> str:
        return f"{self.url}/api/v1/bots/webhooks/{webhook_id}/invoke"

    def start(self) -> OctoRpaEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, name="octorpa-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OctoRpaEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["EmulatorState", "OctoRpaEmulator", "expected_sign"]
