"""Hook for the 八爪鱼RPA (Octopus RPA) webhook trigger: signs and sends one call that starts an app."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import BaseHook

from airflow_octorpa.exceptions import (
    OctoRpaConfigurationError,
    OctoRpaError,
    OctoRpaInvalidParamsError,
    OctoRpaNotAWebhookError,
    OctoRpaTransportError,
    OctoRpaWebhookError,
)
from airflow_octorpa.hooks.url_shape import (
    WEBHOOK_URL_SHAPE,
    has_webhook_shape,
    not_a_webhook_problem,
    shape_warning,
)
from airflow_octorpa.rate_limit import DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS, hold_seconds

if TYPE_CHECKING:
    import requests

DEFAULT_TIMEOUT = 30.0
# A call that has not been answered in ten minutes is lost; a longer timeout only holds a worker.
MAX_TIMEOUT = 600.0
# The vendor documents no size limit; an RPA app's input variables are small, and a body this big
# is a mistake (a whole file passed by value) that is better refused before it is sent.
MAX_BODY_BYTES = 1024 * 1024
# How much of a non-JSON error body (a gateway's HTML page) an error message quotes.
_EXCERPT_CHARS = 200


def sign(timestamp: str, secret: str) -> str:
    """Return the vendor's signature for ``timestamp`` and ``secret``.

    Base64(HMAC-SHA256(key = timestamp + "\\n" + secret, message = empty)), key UTF-8, exactly as
    the vendor's samples compute it (the secret is part of the key; the message is empty).
    """
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode("ascii")


# How deep app_params may nest. An RPA app's input variables are flat or nearly so; deeper (or a
# mapping that contains itself) is a mistake, refused with a message instead of a RecursionError.
MAX_PARAMS_DEPTH = 32


def _check_json_value(value: Any, path: str, depth: int = 0) -> None:
    """Raise when ``value`` cannot travel as JSON with its type intact (``path`` names it)."""
    if depth > MAX_PARAMS_DEPTH:
        raise OctoRpaInvalidParamsError(
            f"app_params{path[:200]} nests more than {MAX_PARAMS_DEPTH} levels deep, or contains itself. Pass "
            "the app's input variables as a flat mapping of names to values."
        )
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_text(value, path)
        return
    if isinstance(value, int):
        if value.bit_length() > 64 * 8:  # Python refuses to write ints past 4300 digits as text
            raise OctoRpaInvalidParamsError(
                f"app_params{path} is an integer of {value.bit_length()} bits, too large to send as a JSON "
                "number. Send it as a string."
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise OctoRpaInvalidParamsError(
                f"app_params{path} is {value!r}, which JSON cannot carry. Send a finite number, "
                "or None for an empty value."
            )
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise OctoRpaInvalidParamsError(
                    f"app_params{path} has the key {key!r:.80} of type {type(key).__name__}; JSON object "
                    "keys must be strings. Convert it with str() before passing it."
                )
            _check_text(key, f"{path} key {key!r:.80}")
            _check_json_value(item, f"{path}[{key!r:.80}]", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_value(item, f"{path}[{index}]", depth + 1)
        return
    raise OctoRpaInvalidParamsError(
        f"app_params{path} is a {type(value).__name__} ({value!r:.80}), which JSON cannot carry. "
        "Convert it to a string, number, boolean, list or mapping before passing it "
        "(for example a datetime with .isoformat(), a Decimal with str() or float())."
    )


def _check_text(text: str, path: str) -> None:
    """Text must be valid Unicode: a lone surrogate (from bad decoding upstream) cannot be UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise OctoRpaInvalidParamsError(
            f"app_params{path} holds the lone surrogate {text[err.start]!r} at position {err.start}, which is "
            "not valid Unicode and cannot be sent as UTF-8. Fix the decoding where the value comes from."
        ) from None


def validate_app_params(app_params: Any) -> dict[str, Any]:
    """Return ``app_params`` as a dict once it is known to serialise to JSON unchanged."""
    if app_params is None:
        return {}
    if not isinstance(app_params, Mapping):
        raise OctoRpaInvalidParamsError(
            f"app_params must be a mapping of the app's input variable names to values, got a "
            f"{type(app_params).__name__}: {app_params!r:.120}."
        )
    _check_json_value(app_params, "")
    return dict(app_params)


def build_payload(
    app_params: Mapping[str, Any] | None,
    *,
    secret: str | None,
    bot_id: str | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """Build the webhook body: ``sign``, ``params``, ``timestamp`` and, when set, ``SpecifiedBot``.

    ``sign`` is empty when there is no secret (the trigger's signature check is off).
    """
    params = validate_app_params(app_params)
    if bot_id is not None and (not isinstance(bot_id, str) or not _is_valid_text(bot_id)):
        raise OctoRpaConfigurationError(
            f"bot_id must be a string of valid Unicode (the robot id from the Octopus RPA console), got "
            f"{type(bot_id).__name__}: {bot_id!r:.80}."
        )
    timestamp = timestamp if timestamp is not None else str(int(time.time()))
    body: dict[str, Any] = {
        "sign": sign(timestamp, secret) if secret else "",
        "params": params,
        "timestamp": timestamp,
    }
    if bot_id:
        body["SpecifiedBot"] = bot_id
    return body


def _is_valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class PreparedCall:
    """A checked call: the app's parameters and the robot, ready to be signed and sent."""

    params: dict[str, Any]
    bot_id: str | None


@dataclass(frozen=True)
class TriggerResult:
    """What the service says about the run it started."""

    flow_process_no: str | None
    flow_id: str | None
    enterprise_id: str | None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


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

    def _error(self, problem: str) -> OctoRpaConfigurationError:
        return OctoRpaConfigurationError(f"Octopus RPA connection {self.octorpa_conn_id!r} {problem}")

    @cached_property
    def config(self) -> OctoRpaWebhookConfig:
        """The connection's settings, read once and checked before any request is made."""
        from airflow.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.octorpa_conn_id)
        except AirflowNotFoundException:
            raise self._error(
                "is not defined. Create it (Admin > Connections, type 'Octopus RPA') or set the "
                f"environment variable AIRFLOW_CONN_{self.octorpa_conn_id.upper()}."
            ) from None
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
            raise self._error(f"has the webhook URL {_redacted_url(url, signed)!r}: {problem}")
        if problem := not_a_webhook_problem(url):
            raise self._error(
                f"has the URL {_redacted_url(url, signed)!r}, which is not a webhook URL: {problem}. Copy the "
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
                f"has the port {port} beside the webhook URL {_redacted_url(url, signed)!r}, whose port is {url_port}. "
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
        body = build_payload(app_params, secret=None, bot_id=bot_id or self.config.bot_id)  # a send's checks
        call = PreparedCall(params=body["params"], bot_id=body.get("SpecifiedBot"))
        size = len(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        if size > MAX_BODY_BYTES:
            raise OctoRpaInvalidParamsError(
                f"app_params make a request body of {size} bytes, over this provider's limit of "
                f"{MAX_BODY_BYTES} bytes. Pass a reference (a file path or URL the app can read) instead "
                "of the content itself."
            )
        return call

    def send(self, call: PreparedCall) -> TriggerResult:
        """Sign ``call`` with the current time and send it once."""
        config = self.config
        # No local of this frame holds the signed body: tracebacks that show locals (Airflow 3.0's
        # console) would print its sign.
        response = self._post(config, self._signed_body(call, config))
        result = self._result(response) if 200 <= response.status_code < 300 else None
        if result is None:
            raise self._webhook_error(response)
        return result

    @staticmethod
    def _signed_body(call: PreparedCall, config: OctoRpaWebhookConfig) -> bytes:
        body = build_payload(call.params, secret=config.secret, bot_id=call.bot_id)
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")

    def _post(self, config: OctoRpaWebhookConfig, data: bytes) -> requests.Response:
        from airflow_octorpa.hooks.transport import request_was_sent, watched_attempt

        with watched_attempt() as attempt:
            try:
                return self.session.post(config.url, data=data, timeout=config.timeout, allow_redirects=False)
            except Exception as err:
                del data  # the signed body, out of the traceback's locals
                # Only a failure before the request's first byte proves it never left; anything
                # later (a read timeout, a reset, a TLS error while reading the answer) may have
                # reached the service and started a run.
                sent = request_was_sent(attempt, err)
                raise OctoRpaTransportError(
                    f"Calling the Octopus RPA webhook (connection {self.octorpa_conn_id!r}) failed: "
                    f"{type(err).__name__}. "
                    + (
                        "The request may have reached the service, so the app may have started: check "
                        "the Octopus RPA console before triggering again."
                        if sent
                        else "The request never left this machine, so nothing was started: check the URL, "
                        "the network and any proxy, then retry."
                    ),
                    request_sent=sent,
                ) from None

    def _webhook_error(self, response: requests.Response) -> OctoRpaError:
        fields = _json_fields(response) or {}
        code = _str_or_none(fields.get("code"))
        if code is None and _is_html(response) and not has_webhook_shape(self.config.url):
            return OctoRpaNotAWebhookError(
                f"The URL of connection {self.octorpa_conn_id!r} answered HTTP {response.status_code} with a web "
                "page (HTML), and its path is not a webhook's: it is not the app's webhook URL, and no Octopus RPA "
                "run is known to have started from it. Copy the app's Webhook地址 from its webhook trigger in the "
                f"Octopus RPA console ({WEBHOOK_URL_SHAPE}) into the connection, then clear the task. Retries do "
                "not resend it: if the URL is a gateway of yours in front of the service, check the console first."
            )
        return OctoRpaWebhookError.from_answer(
            status=response.status_code,
            code=code,
            description=_str_or_none(fields.get("description")),
            request_id=_str_or_none(fields.get("requestid")),
            conn_id=self.octorpa_conn_id,
            body_excerpt=None if code else response.text[:_EXCERPT_CHARS].strip(),
            retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
        )

    @staticmethod
    def _result(response: requests.Response) -> TriggerResult | None:
        """The started run, or None when a 2xx is not the service's answer (a proxy's page, an
        empty body, JSON without ``flowProcessNo``): then whether a run started is unknown."""
        fields = _json_fields(response) or {}
        flow_process_no = _str_or_none(fields.get("flowprocessno"))
        if not flow_process_no:
            return None
        return TriggerResult(
            flow_process_no=flow_process_no,
            flow_id=_str_or_none(fields.get("flowid")),
            enterprise_id=_str_or_none(fields.get("enterpriseid")),
        )

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
        if problem := _head_answer_problem(response):
            return False, f"The webhook URL answered HTTP {response.status_code} to a HEAD request: {problem}"
        if _is_html(response) and not has_webhook_shape(config.url):
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


def _head_answer_problem(response: requests.Response) -> str | None:
    """What a HEAD answer says is wrong with the webhook URL, or None when it looks served.

    A webhook takes only POST, so 405 (or another 4xx) is the expected answer; 404/410, a
    redirect or a server error mean no webhook is served at that URL as written.
    """
    status = response.status_code
    if status in (404, 410):
        return "no webhook is served there. Copy the URL again from the Octopus RPA console."
    if 300 <= status < 400:
        # The target is not repeated: a probe of any host must not relay what that host says.
        return (
            "it redirects elsewhere, and signed calls are not redirected. Put the webhook URL exactly as the "
            "console shows it."
        )
    if status >= 500:
        return "the server failed. Try again later, or check the service's status."
    return None


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
    if parts.scheme == "http" and not allow_insecure_http and not _is_loopback(host):
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


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redacted_url(url: str, signed: bool) -> str:
    """``url`` as an error message may show it: no user info (a password may stand there), and for
    an unsigned webhook (whose id is then the credential) no path beyond the host."""
    scheme, _, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    netloc = netloc.rpartition("@")[2]
    if not signed and path:
        return f"{scheme}://{netloc}/<path hidden: without a secret it is the credential>"
    return f"{scheme}://{netloc}{slash}{path}"


def _is_html(response: requests.Response) -> bool:
    return response.headers.get("Content-Type", "").split(";")[0].strip().lower() in (
        "text/html",
        "application/xhtml+xml",
    )


def _json_fields(response: requests.Response) -> dict[str, Any] | None:
    """The answer's JSON object with lower-case keys (the service's own samples differ in case), or
    None when the body is not a JSON object."""
    try:
        parsed = response.json()
    except ValueError:
        return None
    return {str(k).lower(): v for k, v in parsed.items()} if isinstance(parsed, dict) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _retry_after_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
