"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_octorpa import __version__

DOCUMENTATION_URL = "https://pypi.org/project/airflow-provider-octorpa/#description"


def get_provider_info() -> dict[str, Any]:
    """Describe the package, its hook and its connection type (with the connection form's fields)."""
    return {
        "package-name": "airflow-provider-octorpa",
        "name": "八爪鱼RPA (Octopus RPA)",
        "description": "Start 八爪鱼RPA (Octopus RPA) apps on robots through signed webhook triggers.",
        # Airflow links a provider without one to Apache's documentation site, which has no page
        # for this provider; the package's PyPI page shows its README.
        "documentation-url": DOCUMENTATION_URL,
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "八爪鱼RPA (Octopus RPA)",
                "external-doc-url": "https://rpa.bazhuayu.com/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "八爪鱼RPA (Octopus RPA)",
                "python-modules": ["airflow_octorpa.hooks.octorpa"],
            }
        ],
        "operators": [
            {
                "integration-name": "八爪鱼RPA (Octopus RPA)",
                "python-modules": ["airflow_octorpa.operators.octorpa"],
            }
        ],
        "triggers": [
            {
                "integration-name": "八爪鱼RPA (Octopus RPA)",
                "python-modules": ["airflow_octorpa.triggers.octorpa"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_octorpa.hooks.octorpa.OctoRpaHook",
                "hook-name": "八爪鱼RPA (Octopus RPA) Webhook",
                "connection-type": "octorpa",
                "conn-fields": {
                    "bot_id": {
                        "label": "Robot ID (机器人ID)",
                        "schema": {"type": ["string", "null"]},
                        "description": "Optional. The robot that runs the app; a task's bot_id "
                        "overrides it. Empty: the robot chosen on the trigger.",
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "schema": {"type": ["number", "null"], "default": 30, "exclusiveMinimum": 0},
                        "description": "Seconds to wait for the webhook to answer.",
                    },
                    "rate_limits": {
                        "label": "Rate limits",
                        "schema": {"type": ["string", "null"], "default": "5/second;20/minute"},
                        "description": "The account's call limits in the 'limits' package notation.",
                    },
                    "pool": {
                        "label": "Pool",
                        "schema": {"type": ["string", "null"], "default": "octorpa"},
                        "description": "The Airflow pool every call of this account runs in.",
                    },
                    "pool_size": {
                        "label": "Pool size",
                        "schema": {"type": ["integer", "null"], "default": 5, "minimum": 1},
                        "description": "That pool's slot count (not Airflow's slots per task); each call "
                        "keeps its slot long enough for the rate limits to hold.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "login", "port", "extra"],
                    "relabeling": {
                        "host": "Webhook URL (Webhook地址)",
                        "password": "Signing secret (签名密钥)",
                    },
                    "placeholders": {
                        "host": "https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/<webhookId>/invoke",
                        "password": "Empty when the trigger's signature check is off",
                        "bot_id": "Robot ID from the enterprise console",
                        "timeout": "30",
                        "rate_limits": "5/second;20/minute",
                        "pool": "octorpa",
                        "pool_size": "5",
                    },
                },
            }
        ],
    }
