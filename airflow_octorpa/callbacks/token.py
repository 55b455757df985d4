"""The callback token and the URL a run reports to.

A token is the trigger task instance's digest (which record to look at) and 256 random bits made
for one call. Only the random part's SHA-256 is ever stored; the URL itself goes only into the
call's params, which the provider never logs, renders, pushes to XCom, keeps in a Variable or sends
to OpenLineage. An HMAC under an Airflow key would need no storage, but on Airflow 3 an unset key
is random per process, so every report would be lost.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_octorpa.callbacks.reports import REPORT_PREFIX, ReportKey, report_key_of
from airflow_octorpa.exceptions import OctoRpaConfigurationError

ROUTE_PREFIX = "/octorpa"
CALLBACK_PATH = "/v1/callbacks/"  # under ROUTE_PREFIX
DEFAULT_CALLBACK_PARAM = "airflow_callback_url"


class HiddenToken(str):
    """A token whose repr hides it: error reports that capture locals (Sentry's default) show no URL."""

    def __repr__(self) -> str:
        return "'<callback token>'"


class HiddenUrl(str):
    """The callback URL, as it goes into the call's params: its repr hides it too."""

    def __repr__(self) -> str:
        return "'<callback URL>'"


@dataclass(frozen=True)
class CallbackToken:
    """A token, where a run reports with it, and the key its report is kept under."""

    token: str = field(repr=False)
    url: str = field(repr=False)
    key: ReportKey


def new_callback(base_url: str, dag_id: str, run_id: str, task_id: str, map_index: int) -> CallbackToken:
    """A new token for a call of this task instance (its earlier calls' tokens stop working)."""
    secret = secrets.token_urlsafe(32)  # 256 bits
    key = report_key_of(dag_id, run_id, task_id, map_index, hashlib.sha256(secret.encode()).hexdigest())
    token = HiddenToken(key.variable[len(REPORT_PREFIX) :] + secret)
    return CallbackToken(token, HiddenUrl(f"{base_url.rstrip('/')}{ROUTE_PREFIX}{CALLBACK_PATH}{token}"), key)


def callback_base_url() -> str:
    """Where robots reach Airflow: ``[octorpa] callback_base_url``, else Airflow's own base URL.

    Raises before anything is sent when none is set: ``[api] base_url`` has no default on Airflow 3,
    and Airflow 2's default ``[webserver] base_url`` (``http://localhost:8080``) is no address a
    robot reaches.
    """
    from airflow.providers.common.compat.sdk import conf

    from airflow_octorpa.version_compat import airflow_base_url_setting

    own = (conf.get("octorpa", "callback_base_url", fallback="") or "").strip()
    section, key = airflow_base_url_setting()
    theirs = (conf.get(section, key, fallback="") or "").strip()
    if theirs and theirs == (conf.get_default_value(section, key, fallback="") or "").strip():
        theirs = ""  # Airflow 2's built-in default is not a setting anyone made
    base = own or theirs
    if not base:
        raise OctoRpaConfigurationError(
            "callback=True needs the address robots reach Airflow at, and none is set. Set [octorpa] "
            f"callback_base_url (or [{section}] {key}), for example AIRFLOW__OCTORPA__CALLBACK_BASE_URL="
            "https://airflow.example.com. Nothing was sent."
        )
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OctoRpaConfigurationError(
            f"The callback base URL {base!r} is not an http(s) URL; set [octorpa] callback_base_url to the "
            "address robots reach Airflow at. Nothing was sent."
        )
    return base
