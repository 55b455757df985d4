"""Hook for the 八爪鱼RPA (Octopus RPA) webhook trigger: signs and sends one call that starts an app.

A thin façade, as ``SlackWebhookHook`` is: the body and its signature are in ``hooks.payload``, the
connection's settings in ``hooks.settings``, the exchange in ``hooks.transport`` and
``hooks.answer``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseHook

from airflow_octorpa.exceptions import OctoRpaConfigurationError
from airflow_octorpa.hooks.answer import TriggerResult, head_answer_problem, is_html, started_run, webhook_error
from airflow_octorpa.hooks.payload import MAX_BODY_BYTES, PreparedCall, build_payload, prepare_call, sign, signed_body
from airflow_octorpa.hooks.settings import OctoRpaWebhookConfig, SettingsReader
from airflow_octorpa.hooks.url_shape import WEBHOOK_URL_SHAPE, has_webhook_shape, shape_warning

if TYPE_CHECKING:
    import requests

# What 0.x code imported from here.
__all__ = [
    "MAX_BODY_BYTES",
    "OctoRpaHook",
    "OctoRpaWebhookConfig",
    "PreparedCall",
    "TriggerResult",
    "build_payload",
    "sign",
]


class OctoRpaHook(BaseHook):
    """
    Call an 八爪鱼RPA (Octopus RPA) webhook trigger to start an RPA app on a robot.

    The connection holds the webhook URL in ``host``, the signing secret (签名密钥) in
    ``password`` (empty when the trigger's signature check is off) and, in ``extra``,
    ``bot_id`` (default robot), ``timeout`` (seconds, default 30), ``rate_limits``
    (default ``"5/second;20/minute"``), ``pool`` (the pool every call of this account runs in,
    default ``"octorpa"``) and ``pool_size`` (that pool's slot count, default 5).

    :param octorpa_conn_id: The Airflow connection of type ``octorpa``.
    :param timeout: Seconds to wait for the service; overrides the connection's ``timeout``.
    """

    conn_name_attr = "octorpa_conn_id"
    default_conn_name = "octorpa_default"
    conn_type = "octorpa"
    hook_name = "八爪鱼RPA (Octopus RPA) Webhook"

    def __init__(self, octorpa_conn_id: str = default_conn_name, *, timeout: float | None = None) -> None:
        super().__init__()
        self.octorpa_conn_id = octorpa_conn_id
        self._timeout_override = timeout

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The extras' form fields, for Airflow 2.11 and 3.0 (later versions read the provider's metadata)."""
        from airflow_octorpa.hooks.connection_form import form_widgets

        return form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hidden fields, labels and placeholders, for Airflow 2.11 and 3.0."""
        from airflow_octorpa.hooks.connection_form import UI_FIELD_BEHAVIOUR

        return copy.deepcopy(UI_FIELD_BEHAVIOUR)

    @cached_property
    def config(self) -> OctoRpaWebhookConfig:
        """The connection's settings, read once and checked before any request is made."""
        from airflow.exceptions import AirflowNotFoundException

        reader = SettingsReader(self.octorpa_conn_id, timeout_override=self._timeout_override)
        try:
            conn = self.get_connection(self.octorpa_conn_id)
        except AirflowNotFoundException:
            raise reader.missing() from None
        return reader.read(conn)

    def get_conn(self) -> OctoRpaWebhookConfig:
        """Return the checked connection settings."""
        return self.config

    @cached_property
    def session(self) -> requests.Session:
        from airflow_octorpa.hooks.transport import webhook_session

        return webhook_session()

    def trigger(self, app_params: Mapping[str, Any] | None, bot_id: str | None = None) -> TriggerResult:
        """Start the connection's RPA app with ``app_params`` on ``bot_id`` (default: the connection's).

        :return: the started run's ``flowProcessNo`` and ids.
        :raises OctoRpaConfigurationError: the call cannot be made correctly; nothing was sent.
        :raises OctoRpaWebhookError: the service answered with anything but HTTP 200.
        :raises OctoRpaTransportError: the HTTP exchange failed; see its ``request_sent``.
        """
        return self.send(self.prepare(app_params, bot_id))

    def prepare(self, app_params: Mapping[str, Any] | None, bot_id: str | None = None) -> PreparedCall:
        """Check a call without sending it: raises ``OctoRpaConfigurationError`` for what cannot be sent."""
        return prepare_call(app_params, bot_id or self.config.bot_id)

    def send(self, call: PreparedCall) -> TriggerResult:
        """Sign ``call`` with the current time and send it once."""
        config = self.config
        # No local of this frame holds the signed body: tracebacks that show locals (Airflow 3.0's
        # console) would print its sign.
        from airflow_octorpa.hooks.transport import post_once

        response = post_once(
            self.session, config.url, signed_body(call, config.secret), config.timeout, self.octorpa_conn_id
        )
        result = started_run(response) if 200 <= response.status_code < 300 else None
        if result is None:
            raise webhook_error(response, self.octorpa_conn_id, config.url, config.rate_limits)
        return result

    def test_connection(self) -> tuple[bool, str]:
        """Check the settings and that the webhook's host answers. Never POSTs: starts no run."""
        import requests

        try:
            config = self.config
        except OctoRpaConfigurationError as err:
            return False, str(err)
        try:
            response = self.session.head(config.url, timeout=config.timeout, allow_redirects=False)
        except requests.RequestException as err:
            return False, f"The webhook's host did not answer ({type(err).__name__}). Check the URL and network."
        if problem := head_answer_problem(response):
            return False, f"The webhook URL answered HTTP {response.status_code} to a HEAD request: {problem}"
        if is_html(response) and not has_webhook_shape(config.url):
            return False, (
                f"The URL answered HTTP {response.status_code} with a web page (HTML), and its path is not a "
                f"webhook's: it is not the app's webhook URL. Copy the Webhook地址 of the app's webhook trigger "
                f"({WEBHOOK_URL_SHAPE})."
            )
        note = f" Note: {warning}" if (warning := shape_warning(config.url)) else ""
        return True, (
            f"Settings are valid and the webhook's host answered (HTTP {response.status_code} to a "
            "HEAD request). No RPA run was started: the signature is only checked by a real trigger." + note
        )
