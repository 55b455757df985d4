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


@dataclass
class WebhookSpec:
    """One webhook trigger (Webhook 触发器): its id, secret, robot, switch and app."""

    id: str
    app: AppSpec
    robot: str
    secret: str | None = None
    enabled: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WebhookSpec:
        app = data.get("app") or {}
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
                        "inputs": {"订单号": "", "收货地址": "", "数量": 1},
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
