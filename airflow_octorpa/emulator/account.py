"""The emulated account: its webhooks, rate-limit windows, runs and the calls it saw, and how it answers
one invocation, faithful to the vendor's documented contract.

Where the vendor documents nothing (codes for a disabled trigger or unknown robot, the rate-limit
answer), the account answers in the vendor's error shape with codes of its own, named on the
Emulator page; tests of the provider must not rely on those codes being the vendor's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from limits import parse_many, storage, strategies

from airflow_octorpa.emulator.config import CallbackSpec, EmulatorConfig, WebhookSpec
from airflow_octorpa.emulator.faults import Fault, FaultPlan

log = logging.getLogger(__name__)

# .NET ticks (100 ns since 0001-01-01) at the Unix epoch: the vendor's flowProcessNo looks like ticks.
_TICKS_AT_UNIX_EPOCH = 621_355_968_000_000_000
_RATE_LIMIT_KEY = "account"  # one budget for the whole account, as docs/pages/rate-limits.md assumes


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
        self._schedules_stop = threading.Event()

    def reset(self) -> None:
        self._schedules_stop.set()  # the schedules started before stop; new ones get a new event
        self._schedules_stop = threading.Event()
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

    def run_on_schedule(
        self, webhook_id: str, inbox_url: str, params: dict[str, Any], count: int, every: float
    ) -> None:
        """Start ``count`` runs of the webhook's app by the console's own schedule, one every ``every``
        seconds from now, not through a webhook call; each reports its end to ``inbox_url`` with its
        ``flowProcessNo`` as its ``report_id``, as the app's last HTTP step would."""
        with self._lock:
            try:
                webhook = self._webhook(webhook_id)  # refused now, not in the thread
            except _Refusal as refusal:
                raise LookupError(refusal.description) from None
        stop = self._schedules_stop
        thread = threading.Thread(
            target=self._scheduled_runs, args=(webhook, inbox_url, params, count, every, stop),
            name="octorpa-emulated-schedule", daemon=True,
        )  # fmt: skip
        thread.start()

    def _scheduled_runs(
        self, webhook: WebhookSpec, url: str, params: dict[str, Any], count: int, every: float, stop: threading.Event
    ) -> None:
        from airflow_octorpa.emulator.app_run import AppRun

        spec = replace(webhook.callback or CallbackSpec(), ask_every=0.0)  # an inbox takes no progress
        for index in range(count):
            if index and stop.wait(every):
                return
            if stop.is_set():
                return
            with self._lock:
                run = self._start_run(webhook, {"params": params}, time.time())
                run["started_by"] = "schedule"
                self.runs.append(run)
            if spec.fault != "never":
                AppRun(spec, url, run, self._lock, report_id=run["flow_process_no"]).start()

    def _schedule_callback(self, webhook: WebhookSpec, run: dict[str, Any]) -> None:
        """As the app's steps: progress and the end, to the callback URL it was given."""
        from airflow_octorpa.emulator.app_run import AppRun

        spec = webhook.callback
        url = run["params"].get(spec.param) if spec is not None else None
        if spec is None or not isinstance(url, str) or spec.fault == "never":
            return
        AppRun(spec, url, run, self._lock).start()

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
