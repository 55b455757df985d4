"""The connection's settings: the webhook URL, the secret and the extras, read and checked."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_octorpa.checks import is_loopback_host
from airflow_octorpa.exceptions import OctoRpaConfigurationError
from airflow_octorpa.hooks.url_shape import WEBHOOK_URL_SHAPE, not_a_webhook_problem
from airflow_octorpa.rate_limit import DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS, hold_seconds

DEFAULT_TIMEOUT = 30.0
# A call that has not been answered in ten minutes is lost; a longer timeout only holds a worker.
MAX_TIMEOUT = 600.0


@dataclass(frozen=True)
class OctoRpaWebhookConfig:
    """The connection's settings, checked; built by :meth:`OctoRpaHook.get_conn`."""

    url: str
    secret: str
    bot_id: str | None
    timeout: float
    rate_limits: str
    pool: str
    pool_size: int
    hold: float  # seconds a call keeps its pool slot after its exchange ends (see rate_limit)

    @property
    def webhook_id(self) -> str:
        """The webhook's id as the console shows it: the URL's part before ``/invoke``."""
        parts = [p for p in urlsplit(self.url).path.split("/") if p]
        if len(parts) >= 2 and parts[-1] == "invoke":
            return parts[-2]
        return parts[-1] if parts else self.url

    @property
    def webhook_label(self) -> str:
        """How the webhook is named wherever the provider writes it (records, lineage, messages).

        With the trigger's signature check off, the webhook id is the credential (the URL alone
        starts the app), so then only a short digest of it is written: enough to tell webhooks
        apart and to match one you know (``octorpa doctor`` prints it).
        """
        if self.secret:
            return self.webhook_id
        return "sha256:" + hashlib.sha256(self.webhook_id.encode("utf-8")).hexdigest()[:12]

    @property
    def url_label(self) -> str:
        """The URL as it may be written: with the webhook id replaced by its label when unsigned."""
        return self.url if self.secret else self.url.replace(self.webhook_id, self.webhook_label)

    def __repr__(self) -> str:
        # The secret never appears in a repr, nor an unsigned webhook's id.
        return (
            f"OctoRpaWebhookConfig(url={self.url_label!r}, secret={'***' if self.secret else ''!r}, "
            f"bot_id={self.bot_id!r}, timeout={self.timeout!r}, rate_limits={self.rate_limits!r}, "
            f"pool={self.pool!r}, pool_size={self.pool_size!r}, hold={self.hold!r})"
        )


class SettingsReader:
    """Reads one connection's settings; every problem names the connection and its fix."""

    def __init__(self, conn_id: str, *, timeout_override: float | None = None) -> None:
        self.octorpa_conn_id = conn_id
        self._timeout_override = timeout_override

    def _error(self, problem: str) -> OctoRpaConfigurationError:
        return OctoRpaConfigurationError(f"Octopus RPA connection {self.octorpa_conn_id!r} {problem}")

    def missing(self) -> OctoRpaConfigurationError:
        return self._error(
            "is not defined. Create it (Admin > Connections, type 'Octopus RPA') or set the "
            f"environment variable AIRFLOW_CONN_{self.octorpa_conn_id.upper()}."
        )

    def read(self, conn: Any) -> OctoRpaWebhookConfig:
        """Check the Airflow connection ``conn`` and return its settings."""
        extra = self._extra(conn.extra)
        rate_limits, pool_size = self._extra_rate_limits(extra), self._extra_pool_size(extra)
        try:
            hold = hold_seconds(rate_limits, pool_size)
        except ValueError as err:
            raise self._error(f"cannot keep its calls within its rate limits: {err}.") from None
        return OctoRpaWebhookConfig(
            url=self._webhook_url(conn.host, conn.schema, conn.port, extra, signed=bool(conn.password)),
            secret=conn.password or "",
            bot_id=self._extra_bot_id(extra),
            timeout=self._extra_timeout(extra),
            rate_limits=rate_limits,
            pool=self._extra_pool(extra),
            pool_size=pool_size,
            hold=hold,
        )

    def _webhook_url(self, host: str | None, schema: str | None, port: int | None, extra: dict, *, signed: bool) -> str:
        """Return the webhook URL the connection describes.

        The host holds the whole URL as copied from the vendor console. A connection written in
        Airflow's URI form cannot hold a URL in its host, so there the host is the server name,
        the path sits in the schema and the scheme (default https) in the ``scheme`` extra.
        """
        host = (host or "").strip()
        if not host:
            raise self._error(
                "has no webhook URL. Put the URL copied from the Octopus RPA console "
                "(https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/<id>/invoke) in the Host field."
            )
        if "://" in host:
            url = host
            self._check_port_matches(url, port, signed)
        else:
            netloc = f"{host}:{port}" if port else host
            url = f"{extra.get('scheme') or 'https'}://{netloc}/{(schema or '').lstrip('/')}"
        if problem := webhook_url_problem(url, allow_insecure_http=self._extra_flag(extra, "allow_insecure_http")):
            raise self._error(f"has the webhook URL {redacted_url(url, signed)!r}: {problem}")
        if problem := not_a_webhook_problem(url):
            raise self._error(
                f"has the URL {redacted_url(url, signed)!r}, which is not a webhook URL: {problem}. Copy the "
                f"app's Webhook地址 from its webhook trigger in the Octopus RPA console ({WEBHOOK_URL_SHAPE})."
            )
        return url

    def _check_port_matches(self, url: str, port: int | None, signed: bool) -> None:
        """A Port beside a whole URL is only allowed to repeat the URL's own (Airflow 3.3's connection
        list tests a connection only when it has one); a different one would be silently ignored."""
        if not port:
            return
        try:
            parts = urlsplit(url)
            url_port = parts.port or {"https": 443, "http": 80}.get(parts.scheme)
        except ValueError:
            return  # the URL itself is refused below
        if int(port) != url_port:
            raise self._error(
                f"has the port {port} beside the webhook URL {redacted_url(url, signed)!r}, whose port is {url_port}. "
                "The URL in the "
                f"Host field decides where calls go: set the port to {url_port} or leave it empty."
            )

    def _extra_flag(self, extra: dict, name: str) -> bool:
        value = extra.get(name, False)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", ""):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise self._error(f"has the extra {name}={value!r}; give true or false.")
        return value

    def _extra_bot_id(self, extra: dict) -> str | None:
        bot_id = extra.get("bot_id")
        if bot_id in (None, ""):
            return None
        if not isinstance(bot_id, str):
            raise self._error(f"has a bot_id extra of type {type(bot_id).__name__}; give the robot id as a string.")
        return bot_id

    def _extra(self, text: str | None) -> dict[str, Any]:
        """The extra as a JSON object; Airflow's ``extra_dejson`` would take bad JSON for ``{}``."""
        if text is None or not str(text).strip():
            return {}
        try:
            extra = json.loads(text)
        except (ValueError, RecursionError):
            raise self._error(
                'has an extra that is not JSON. Write it as a JSON object, such as {"bot_id": "...", "timeout": 30}.'
            ) from None
        if not isinstance(extra, dict):
            raise self._error(f"has an extra that is a JSON {type(extra).__name__}; write it as a JSON object.")
        return extra

    def _extra_timeout(self, extra: dict) -> float:
        raw = self._timeout_override if self._timeout_override is not None else extra.get("timeout")
        if raw in (None, ""):
            return DEFAULT_TIMEOUT
        timeout = math.nan
        if not isinstance(raw, bool):  # true would read as 1 s
            try:
                timeout = float(raw)
            except (TypeError, ValueError, OverflowError):
                pass
        if not math.isfinite(timeout) or not 0 < timeout <= MAX_TIMEOUT:
            raise self._error(f"has the timeout {raw!r}; give a number of seconds above 0 and at most {MAX_TIMEOUT:g}.")
        return timeout

    def _extra_rate_limits(self, extra: dict) -> str:
        rate_limits = extra.get("rate_limits") or DEFAULT_RATE_LIMITS
        from limits import parse_many  # lazily: DAG files import this module at every parse

        try:
            items = parse_many(rate_limits) if isinstance(rate_limits, str) else []
        except (ValueError, TypeError, OverflowError):
            items = []
        if not items or any(item.get_expiry() <= 0 or item.amount < 1 for item in items):
            raise self._error(
                f"has the rate_limits {rate_limits!r:.120}, which the 'limits' package cannot read as limits of "
                f"at least one call per period; write them like {DEFAULT_RATE_LIMITS!r}."
            )
        return rate_limits

    def _extra_pool(self, extra: dict) -> str:
        pool = extra.get("pool") or DEFAULT_POOL
        if not isinstance(pool, str) or not pool.strip() or len(pool) > 256 or not pool.isprintable():
            raise self._error(f"has the pool {pool!r:.80}; give the name of an Airflow pool (at most 256 characters).")
        return pool

    def _extra_pool_size(self, extra: dict) -> int:
        if extra.get("pool_slots") not in (None, ""):
            # Airflow's pool_slots is the slots one task takes; this extra was renamed so that it
            # cannot be read that way (1 would shorten the hold and overdraw the limits).
            raise self._error(
                "has the extra 'pool_slots', which this provider no longer reads: it meant the pool's "
                "size, not Airflow's slots per task. Rename it to 'pool_size' and give the slot count "
                f"of the pool (default {DEFAULT_POOL_SIZE})."
            )
        raw = extra.get("pool_size")
        if raw in (None, ""):
            return DEFAULT_POOL_SIZE
        text = str(raw).strip() if isinstance(raw, (int, str)) and not isinstance(raw, bool) else ""
        if not (text.isascii() and text.isdigit() and 1 <= len(text) <= 4 and int(text) >= 1):
            raise self._error(
                f"has the pool_size {raw!r}; give the slot count of its pool as a whole number from 1 to 9999 "
                f"(default {DEFAULT_POOL_SIZE})."
            )
        return int(text)


def webhook_url_problem(url: str, *, allow_insecure_http: bool = False) -> str | None:
    """What makes ``url`` unfit for signed webhook calls, or None.

    Refused before anything is recorded or sent: what ``requests`` could not send (a host that is
    no host name), what would send credentials of its own (user info becomes Basic auth), and plain
    ``http://`` to anything but this machine: the vendor's ``sign`` covers only the timestamp, not
    the body, so whoever sees one request could start the app with other params for an hour.
    """
    fix = "Copy the whole URL from the Octopus RPA console, starting with https://."
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return f"it is not a URL with a valid port. {fix}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"it is not an http(s) URL. {fix}"
    if "@" in parts.netloc:
        return (
            "it holds user info (name@ or name:password@), which would be sent as a Basic-auth header. The "
            "webhook needs none: remove it."
        )
    host = parts.hostname
    if not _is_host(host):
        return (
            f"its host {host!r} is not a valid host name or IP address (spaces, full-width letters or symbols). "
            f"{fix} A non-ASCII domain may also be given in its xn-- form."
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        return (
            "it is plain http://. The signature covers only the timestamp, not the parameters, so anyone who "
            "sees one request can start the app with other parameters for an hour. Use https://, or set the "
            "extra allow_insecure_http to true where the network is trusted."
        )
    return None


def _is_host(host: str) -> bool:
    import ipaddress

    import idna

    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        idna.encode(host, uts46=False)
    except (idna.IDNAError, UnicodeError, ValueError):
        return False
    return True


def redacted_url(url: str, signed: bool) -> str:
    """``url`` as an error message may show it: no user info (a password may stand there), and for
    an unsigned webhook (whose id is then the credential) no path beyond the host."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    if not signed and path:
        return f"{scheme}://{netloc}/<path hidden: without a secret it is the credential>"
    return f"{scheme}://{netloc}{slash}{path}"
