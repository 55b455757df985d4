"""What the webhook's answer says: the started run, or the error it stands for."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_octorpa.exceptions import OctoRpaError, OctoRpaNotAWebhookError, OctoRpaWebhookError
from airflow_octorpa.hooks.url_shape import WEBHOOK_URL_SHAPE, has_webhook_shape

if TYPE_CHECKING:
    import requests

# How much of a non-JSON error body (a gateway's HTML page) an error message quotes.
_EXCERPT_CHARS = 200


@dataclass(frozen=True)
class TriggerResult:
    """What the service says about the run it started."""

    flow_process_no: str | None
    flow_id: str | None
    enterprise_id: str | None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def started_run(response: requests.Response) -> TriggerResult | None:
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


def webhook_error(response: requests.Response, conn_id: str, url: str, rate_limits: str | None = None) -> OctoRpaError:
    """The error a non-2xx answer (or a 2xx that names no run) stands for."""
    fields = _json_fields(response) or {}
    code = _str_or_none(fields.get("code"))
    if code is None and is_html(response) and not has_webhook_shape(url):
        return OctoRpaNotAWebhookError(
            f"The URL of connection {conn_id!r} answered HTTP {response.status_code} with a web "
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
        conn_id=conn_id,
        body_excerpt=None if code else response.text[:_EXCERPT_CHARS].strip(),
        retry_after=_retry_after_seconds(response.headers.get("Retry-After")),
        rate_limits=rate_limits,
    )


def head_answer_problem(response: requests.Response) -> str | None:
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


def is_html(response: requests.Response) -> bool:
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
