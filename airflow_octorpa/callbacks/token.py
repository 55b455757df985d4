"""The callback token and the URL a run reports to.

A token is 256 random bits, made for one call. Only its SHA-256 is ever stored (the report's key);
the URL itself goes only into the call's params, which the provider never logs, renders, pushes to
XCom, keeps in a Variable or sends to OpenLineage. An HMAC under an Airflow key would need no
storage, but on Airflow 3 an unset key is random per process, so every report would be lost.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from airflow_octorpa.exceptions import OctoRpaConfigurationError

ROUTE_PREFIX = "/octorpa"
CALLBACK_PATH = "/v1/callbacks/"  # under ROUTE_PREFIX
DEFAULT_CALLBACK_PARAM = "airflow_callback_url"


@dataclass(frozen=True)
class CallbackToken:
    """A token and where a run reports with it."""

    token: str
    url: str

    @property
    def key(self) -> str:
        return token_key(self.token)


def token_key(token: str) -> str:
    """What is stored for a token: its SHA-256, in hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_callback(base_url: str) -> CallbackToken:
    token = secrets.token_urlsafe(32)  # 256 bits
    return CallbackToken(token, f"{base_url.rstrip('/')}{ROUTE_PREFIX}{CALLBACK_PATH}{token}")


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


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
