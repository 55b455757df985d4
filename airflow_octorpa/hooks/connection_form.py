"""The Octopus RPA connection form, defined once for both of Airflow's connection forms.

Airflow 3.1 and later read the form from the provider's metadata (``conn-fields`` and
``ui-field-behaviour`` in :func:`airflow_octorpa.get_provider_info.get_provider_info`); Airflow 2.11
and 3.0 read only the hook's ``get_connection_form_widgets`` and ``get_ui_field_behaviour``. Both are
built from the definitions here, so the two forms cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from airflow_octorpa.rate_limit import DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS

WEBHOOK_URL_PLACEHOLDER = "https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/<webhookId>/invoke"


@dataclass(frozen=True)
class ExtraField:
    """A connection extra with its own form field."""

    name: str
    label: str
    json_type: str  # "string", "number" or "integer"
    description: str
    placeholder: str
    default: Any = None
    minimum: float | None = None
    exclusive_minimum: float | None = None

    def conn_field(self) -> dict[str, Any]:
        """This field in the provider metadata's ``conn-fields`` notation (Airflow 3.1+)."""
        schema: dict[str, Any] = {"type": [self.json_type, "null"]}
        if self.default is not None:
            schema["default"] = self.default
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.exclusive_minimum is not None:
            schema["exclusiveMinimum"] = self.exclusive_minimum
        return {"label": self.label, "schema": schema, "description": self.description}


EXTRA_FIELDS = (
    ExtraField(
        "bot_id",
        "Robot ID (机器人ID)",
        "string",
        "Optional. The robot that runs the app; a task's bot_id overrides it. Empty: the robot chosen on the trigger.",
        "Robot ID from the enterprise console",
    ),
    ExtraField(
        "timeout",
        "Timeout (seconds)",
        "number",
        "Seconds to wait for the webhook to answer.",
        "30",
        default=30,
        exclusive_minimum=0,
    ),
    ExtraField(
        "rate_limits",
        "Rate limits",
        "string",
        "The account's call limits in the 'limits' package notation.",
        DEFAULT_RATE_LIMITS,
        default=DEFAULT_RATE_LIMITS,
    ),
    ExtraField(
        "pool",
        "Pool",
        "string",
        "The Airflow pool every call of this account runs in.",
        DEFAULT_POOL,
        default=DEFAULT_POOL,
    ),
    ExtraField(
        "pool_size",
        "Pool size",
        "integer",
        "That pool's slot count (not Airflow's slots per task); each call keeps its slot long enough "
        "for the rate limits to hold.",
        str(DEFAULT_POOL_SIZE),
        default=DEFAULT_POOL_SIZE,
        minimum=1,
    ),
)

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden_fields": ["schema", "login", "port", "extra"],
    "relabeling": {
        "host": "Webhook URL (Webhook地址)",
        "password": "Signing secret (签名密钥)",
    },
    "placeholders": {
        "host": WEBHOOK_URL_PLACEHOLDER,
        "password": "Empty when the trigger's signature check is off",
        **{field.name: field.placeholder for field in EXTRA_FIELDS},
    },
}


def conn_fields() -> dict[str, dict[str, Any]]:
    """The extras' fields for the provider metadata (Airflow 3.1+)."""
    return {field.name: field.conn_field() for field in EXTRA_FIELDS}


def ui_field_behaviour_metadata() -> dict[str, Any]:
    """``ui-field-behaviour`` for the provider metadata: the hook method's dict with dashed keys."""
    return {key.replace("_", "-"): value for key, value in UI_FIELD_BEHAVIOUR.items()}


def form_widgets() -> dict[str, Any]:
    """WTForms fields for Airflow 2.11's Flask AppBuilder form and for Airflow 3.0's form reader.

    Airflow 3.0 reads these with WTForms and Flask AppBuilder replaced by stand-ins that accept only
    ``label``, ``validators``, ``description``, ``default`` and ``widget``: nothing else is passed.
    Numbers are text fields because those stand-ins know no decimal field; the hook parses them.
    """
    from wtforms import IntegerField, StringField
    from wtforms.validators import Optional

    try:
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget

        widget: Any = BS3TextFieldWidget()
    except ImportError:  # Airflow 3.0 without Flask AppBuilder: the stand-in needs no widget
        widget = None
    field_class = {"string": StringField, "number": StringField, "integer": IntegerField}
    return {
        field.name: field_class[field.json_type](
            field.label, validators=[Optional()], description=field.description, widget=widget
        )
        for field in EXTRA_FIELDS
    }
