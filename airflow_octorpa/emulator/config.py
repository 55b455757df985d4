"""What the emulator serves: the account, its robots, its webhook triggers and their apps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_octorpa.rate_limit import DEFAULT_RATE_LIMITS

DEFAULT_ENTERPRISE_ID = "5f0c2a1e-8b7d-4c3a-9e61-2d4b8a7f0c11"
# Feishu's scheme, which the vendor's signing copies, refuses timestamps an hour off.
DEFAULT_TIMESTAMP_TOLERANCE = 3600


@dataclass
class AppSpec:
    """An RPA app: its name and its declared input variables with their default values."""

    name: str
    inputs: dict[str, Any]
    flow_id: str
    # "vendor_example" runs the vendor page's sample app (two message boxes); None records inputs.
    behaviour: str | None = None


CALLBACK_FAULTS = ("never", "twice", "contradiction", "forged")


@dataclass
class CallbackSpec:
    """How the app reports its end, as a real app's last step would: it requests the URL it was given
    in the input variable ``param``, ``after`` seconds after it started.

    ``fault``: ``never`` (no report), ``twice`` (the same report again), ``contradiction`` (then the
    opposite status), ``forged`` (to a made-up token instead). A report after the wait timed out is
    just a long ``after``. ``ask_every`` (seconds, 0: never): the app reports progress that often
    while it runs, and stops at once, reporting ``failed``, when the answer says ``"cancel": true``.
    """

    param: str = "airflow_callback_url"
    after: float = 0.5
    status: str = "succeeded"
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    method: str = "POST"
    fault: str | None = None
    ask_every: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallbackSpec:
        spec = cls(
            param=str(data.get("param", "airflow_callback_url")),
            after=float(data.get("after", 0.5)),
            status=str(data.get("status", "succeeded")),
            outputs=dict(data.get("outputs") or {}),
            message=str(data.get("message", "")),
            method=str(data.get("method", "POST")).upper(),
            fault=data.get("fault"),
            ask_every=float(data.get("ask_every", 0.0)),
        )
        if spec.method not in ("GET", "POST") or spec.fault not in (None, *CALLBACK_FAULTS):
            raise ValueError(f"callback method must be GET or POST and fault one of {CALLBACK_FAULTS}")
        if not 0 <= spec.after <= 86400:
            raise ValueError("callback after must be 0 to 86400 seconds")
        if spec.ask_every < 0 or (0 < spec.ask_every < 0.1):
            raise ValueError("callback ask_every must be 0 (never) or at least 0.1 seconds")
        return spec

    def to_dict(self) -> dict[str, Any]:
        return {
            "param": self.param,
            "after": self.after,
            "status": self.status,
            "outputs": self.outputs,
            "message": self.message,
            "method": self.method,
            "fault": self.fault,
            "ask_every": self.ask_every,
        }


@dataclass
class WebhookSpec:
    """One webhook trigger (Webhook 触发器): its id, secret, robot, switch and app."""

    id: str
    app: AppSpec
    robot: str
    secret: str | None = None
    enabled: bool = True
    callback: CallbackSpec | None = None  # the app reports its end when given a callback URL

    @classmethod
    def reporting_app(
        cls, webhook_id: str, secret: str, robot: str = "robot-warehouse-01", name: str = "回调", **callback: Any
    ) -> WebhookSpec:
        """A webhook whose app takes an order number and reports its end (``callback``: a
        :class:`CallbackSpec`'s fields), as an app built for a waiting task does."""
        return cls(
            id=webhook_id,
            app=AppSpec(name=name, inputs={"订单号": "", "airflow_callback_url": ""}, flow_id=f"flow-{webhook_id}"),
            robot=robot,
            secret=secret,
            callback=CallbackSpec.from_dict(callback),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebhookSpec:
        app = data.get("app") or {}
        callback = data.get("callback")
        return cls(
            id=str(data["id"]),
            app=AppSpec(
                name=str(app.get("name", data["id"])),
                inputs=dict(app.get("inputs", {})),
                flow_id=str(app.get("flow_id", f"flow-{data['id']}")),
                behaviour=app.get("behaviour"),
            ),
            robot=str(data["robot"]),
            secret=data.get("secret") or None,
            enabled=bool(data.get("enabled", True)),
            callback=CallbackSpec.from_dict(callback) if isinstance(callback, dict) else None,
        )


@dataclass
class EmulatorConfig:
    """The whole account the emulator stands in for."""

    webhooks: dict[str, WebhookSpec] = field(default_factory=dict)
    robots: set[str] = field(default_factory=set)
    enterprise_id: str = DEFAULT_ENTERPRISE_ID
    rate_limits: str = DEFAULT_RATE_LIMITS
    timestamp_tolerance: int = DEFAULT_TIMESTAMP_TOLERANCE

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EmulatorConfig:
        webhooks = [WebhookSpec.from_dict(w) for w in data.get("webhooks", [])]
        robots = set(data.get("robots", [])) | {w.robot for w in webhooks}
        return cls(
            webhooks={w.id: w for w in webhooks},
            robots=robots,
            enterprise_id=str(data.get("enterprise_id", DEFAULT_ENTERPRISE_ID)),
            rate_limits=str(data.get("rate_limits", DEFAULT_RATE_LIMITS)),
            timestamp_tolerance=int(data.get("timestamp_tolerance", DEFAULT_TIMESTAMP_TOLERANCE)),
        )

    @classmethod
    def from_file(cls, path: str | Path) -> EmulatorConfig:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def default_config() -> EmulatorConfig:
    """The emulator's own account: the seed page's two apps, each behind a signed webhook."""
    return EmulatorConfig.from_dict(
        {
            "robots": ["robot-warehouse-01", "robot-finance-01"],
            "webhooks": [
                {
                    "id": "order-processing",
                    "secret": "demo-order-secret",
                    "robot": "robot-warehouse-01",
                    "app": {
                        "name": "订单处理",
                        "flow_id": "flow-order-processing",
                        "inputs": {"订单号": "", "收货地址": "", "数量": 1, "airflow_callback_url": ""},
                    },
                    # Given a callback URL, the app reports progress each second and its end 3 s later
                    # (it stops, reporting failed, if Airflow asks it to).
                    "callback": {
                        "after": 3.0,
                        "ask_every": 1.0,
                        "outputs": {"运单号": "SF1000000001"},
                        "message": "已发货",
                    },
                },
                {
                    "id": "vendor-example",
                    "secret": "SEC123",
                    "robot": "robot-finance-01",
                    "app": {
                        "name": "消息确认示例",
                        "flow_id": "flow-vendor-example",
                        "inputs": {"变量1": "", "变量2": "", "变量3": 0},
                        "behaviour": "vendor_example",
                    },
                },
            ],
        }
    )
