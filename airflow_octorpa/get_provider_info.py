"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_octorpa import __version__
from airflow_octorpa.hooks.connection_form import conn_fields, ui_field_behaviour_metadata

DOCUMENTATION_URL = "https://airflow-provider-octorpa.readthedocs.io/"


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
        # The trigger task's and the wait's "Octopus RPA run" link (a serialized DAG names it).
        "extra-links": ["airflow_octorpa.callbacks.run_page.OctoRpaRunLink"],
        # Removes the call records that Airflow before 3.3 keeps in Variables once their DAG run ends.
        "plugins": [{"name": "octorpa", "plugin-class": "airflow_octorpa.plugins.call_records.OctoRpaPlugin"}],
        "connection-types": [
            {
                "hook-class-name": "airflow_octorpa.hooks.octorpa.OctoRpaHook",
                "hook-name": "八爪鱼RPA (Octopus RPA) Webhook",
                "connection-type": "octorpa",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour_metadata(),
            }
        ],
    }
