"""Errors raised by the Octopus RPA provider.

Every error says what was wrong and what to do. None of them ever carries the signing
secret or a ``sign`` value: they are built from the connection id, the HTTP status and the
vendor's ``code``/``description`` only.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

from airflow.providers.common.compat.sdk import AirflowException, AirflowFailException

# What a user can do about the vendor's known error codes. The vendor documents one code in
# public (docs/pages/operator.md); the others are not known, so they get the generic advice below.
_ADVICE_BY_CODE = {
    "SignatureVerificationFailureOrTimestampExpired": (
        "The service rejected the signature or found the timestamp stale. Check that the "
        "connection's password is the webhook's current signing secret (签名密钥), or empty when "
        "the trigger's signature check is off, and that the worker's clock is synchronised (NTP): "
        "timestamps more than an hour from the service's time are refused."
    ),
}
_ADVICE_RATE_LIMITED = (
    "The service refused the call for the account's rate limit ({limits}). No run was started; send it "
    "again after the window allows. The budget is overdrawn "
    "when a pool has more slots than the connection's pool_size, when calls bypass the pool "
    "(OctoRpaHook.trigger() from your own code, octorpa trigger, tasks in another pool), or when "
    "another system or Airflow deployment uses the same account."
)
_ADVICE_NO_ANSWER = (
    "The answer is not the service's (no flowProcessNo): a proxy or gateway may have answered for it, "
    "after the app started or not. Check the Octopus RPA console for the run, and that the URL is "
    "the webhook's own."
)
_ADVICE_REDIRECT = (
    "The URL answered with a redirect, which this provider does not follow with a signed call. Put "
    "the webhook URL exactly as the Octopus RPA console shows it in the connection's Host field."
)
_ADVICE_SERVER_ERROR = (
    "The service or a gateway in front of it failed, possibly after the app started: the app MAY "
    "HAVE STARTED. Check the Octopus RPA console for the run before triggering again."
)
_ADVICE_DEFAULT = (
    "Check in the Octopus RPA console that the webhook trigger exists and is enabled (启动触发器), "
    "that its robot is online, and that the parameter names match the app's input variables."
)


class CallOutcome(str, Enum):
    """What a webhook call did. Every call ends in exactly one of these."""

    STARTED = "started"  # HTTP 200: the app started (flowProcessNo)
    NOT_STARTED = "not_started"  # never sent, or refused by the service: nothing started
    UNKNOWN = "unknown"  # sent, answer lost or from a gateway: a run may have started


class OctoRpaError(AirflowException):
    """Base class of every error this provider raises."""

    @property
    def outcome(self) -> CallOutcome:
        """What the failed call did; nothing was sent unless a subclass says otherwise."""
        return CallOutcome.NOT_STARTED

    @property
    def safe_to_resend(self) -> bool:
        """True when sending the same call again cannot start a second run and may succeed."""
        return False


class OctoRpaConfigurationError(OctoRpaError, AirflowFailException, ValueError):
    """The connection or the task arguments cannot produce a correct call; nothing was sent.

    A retry cannot change that, so the task fails without burning its retries.
    """


class OctoRpaInvalidParamsError(OctoRpaConfigurationError, TypeError):
    """The app parameters cannot be sent as the vendor expects; nothing was sent."""


class OctoRpaTransportError(OctoRpaError):
    """The HTTP exchange itself failed (connection refused, timeout, reset).

    ``request_sent`` tells whether the request may have reached the service: when it is
    ``False`` the call certainly started nothing; when ``True`` a run may have started.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent

    @property
    def outcome(self) -> CallOutcome:
        return CallOutcome.UNKNOWN if self.request_sent else CallOutcome.NOT_STARTED

    @property
    def safe_to_resend(self) -> bool:
        return not self.request_sent


class OctoRpaWebhookError(OctoRpaError):
    """The webhook answered with something other than HTTP 200.

    Carries the vendor's failure fields: ``status`` (HTTP), ``code``, ``description`` and
    ``request_id`` (each ``None`` when the body did not hold it).
    """

    def __init__(
        self,
        *,
        status: int,
        code: str | None,
        description: str | None,
        request_id: str | None,
        conn_id: str,
        body_excerpt: str | None = None,
        retry_after: float | None = None,
        rate_limits: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.description = description
        self.request_id = request_id
        self.conn_id = conn_id
        self.body_excerpt = body_excerpt
        self.retry_after = retry_after
        self.rate_limits = rate_limits  # the connection's, which the pool keeps calls within
        super().__init__(self._message())

    @property
    def is_rate_limited(self) -> bool:
        """True when the service refused the call for its rate limit (nothing started)."""
        return self.status == 429 or "limit" in (self.code or "").lower()

    @property
    def outcome(self) -> CallOutcome:
        # Only a 4xx is a refusal. A 5xx may come from a gateway after the service started the
        # app; a 2xx without the service's answer, or a 3xx, came from something that is not the
        # service as documented, and may stand in front of a run that started.
        return CallOutcome.NOT_STARTED if 400 <= self.status < 500 else CallOutcome.UNKNOWN

    @property
    def safe_to_resend(self) -> bool:
        return self.is_rate_limited and self.outcome is CallOutcome.NOT_STARTED

    def _advice(self) -> str:
        if self.is_rate_limited:
            kept = f"the connection keeps calls within {self.rate_limits}" if self.rate_limits else "see rate_limits"
            return _ADVICE_RATE_LIMITED.format(limits=kept)
        if 200 <= self.status < 300:
            return _ADVICE_NO_ANSWER
        if 300 <= self.status < 400:
            return _ADVICE_REDIRECT
        if self.status >= 500:
            return _ADVICE_SERVER_ERROR
        return _ADVICE_BY_CODE.get(self.code or "", _ADVICE_DEFAULT)

    def _message(self) -> str:
        parts = [f"Octopus RPA webhook (connection {self.conn_id!r}) answered HTTP {self.status}"]
        if self.code:
            parts.append(f"code {self.code!r}")
        if self.description:
            parts.append(f"description {self.description!r}")
        if self.request_id:
            parts.append(f"requestId {self.request_id!r}")
        if self.code is None and self.body_excerpt:
            parts.append(f"a body starting {self.body_excerpt!r}")
        return ", ".join(parts) + ". " + self._advice()

    @classmethod
    def from_answer(cls, **fields: Any) -> OctoRpaWebhookError:
        """The error for an answer, as the subclass that says whether a retry can help."""
        status, code = fields["status"], fields.get("code")
        if code in _PERMANENT_CODES or status in (401, 403):
            return OctoRpaRejectedError(**fields)
        return cls(**fields)


# Answers no retry can change: the secret, the clock or the credentials must be fixed first.
_PERMANENT_CODES = frozenset({"SignatureVerificationFailureOrTimestampExpired"})


class OctoRpaRejectedError(OctoRpaWebhookError, AirflowFailException):
    """The service rejected the call's credentials; the task fails without burning its retries."""


class OctoRpaUnknownOutcomeError(OctoRpaError, AirflowFailException):
    """A call may have started a run, and this provider will not send it again on its own.

    Raised when the answer was lost (timeout, reset, a gateway's 5xx) and on a retry that finds
    such a call in the task's record. The task fails without retrying; check the Octopus RPA
    console, then clear the task to trigger again if no run started.
    """

    @property
    def outcome(self) -> CallOutcome:
        return CallOutcome.UNKNOWN


class OctoRpaNotAWebhookError(OctoRpaUnknownOutcomeError):
    """The URL answered with a web page and has no webhook's path: it is not the webhook URL.

    No run is known to have started, but the call is recorded as unknown all the same (a gateway of
    the user's own may stand at such a path): retries do not resend it, and the task fails at once.
    """


class OctoRpaTryLaterError(OctoRpaError):
    """A call that started nothing could not be sent again within this try of the task.

    The service asked for a longer wait than a worker should sleep holding a pool slot, or the next
    attempt would not fit in the task's ``execution_timeout``. The task fails like any retryable
    error, so its own retries (``retries``, ``retry_delay``) send the call again later.
    """

    def __init__(self, refusal: OctoRpaError, reason: str, try_after: float) -> None:
        self.refusal = refusal
        self.reason = reason
        self.try_after = try_after
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(try_after))
        super().__init__(
            f"{refusal} Not sent again within this try: {reason}. Nothing was started; the task fails so that "
            f"its retries send the call later (not before {when}). Give the task retries with a retry_delay "
            "that long, or trigger it again then."
        )


class OctoRpaCallRecordError(OctoRpaError):
    """The call could not be recorded before it was sent, so it was not sent.

    Without the record a retry could not know whether this try started a run. The task's retries
    may try again once the metadata database (or, on Airflow 3, the API server) answers.
    """
