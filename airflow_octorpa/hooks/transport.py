"""A ``requests`` session that knows whether any byte of a request left this machine.

A webhook call is not idempotent, and urllib3 raises the same exception types before and after a
request is written (an ``SSLError`` comes from the handshake and from reading alike). So the
connections here mark the moment the first byte is written, and :func:`request_was_sent` reads
the mark: only a failure before it proves that nothing started. Where the mark cannot be read (a
SOCKS proxy), only the exception types that prove nothing was sent count as "never sent". The
session adds no credentials of its own (no ``~/.netrc`` login, no user info from the URL) and keeps
the environment's proxies. The "Security" page says the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NewConnectionError

if TYPE_CHECKING:
    from urllib3 import PoolManager


@dataclass
class SendAttempt:
    """What one exchange did on the wire, as this module's connections saw it."""

    observed: bool = False  # one of this module's connections took part
    sent: bool = False  # a byte of the request (not of a proxy's CONNECT) was handed to the socket


_ATTEMPT: ContextVar[SendAttempt | None] = ContextVar("octorpa_send_attempt", default=None)


class _MarksSent:
    """Mixin for urllib3's connections: mark the attempt sent before the first request byte."""

    _octorpa_connecting = False

    def connect(self) -> None:
        if (attempt := _ATTEMPT.get()) is not None:
            attempt.observed = True
        # A proxy's CONNECT is written with send() too: it is not the request.
        self._octorpa_connecting = True
        try:
            super().connect()  # type: ignore[misc]
        finally:
            self._octorpa_connecting = False

    def send(self, data: Any) -> None:
        if not self._octorpa_connecting:
            if getattr(self, "sock", None) is None:
                # What http.client does first (plain HTTP connects here): a failure here sent nothing.
                self.connect()
            if (attempt := _ATTEMPT.get()) is not None:
                attempt.observed = attempt.sent = True
        super().send(data)  # type: ignore[misc]


class _HTTPConnection(_MarksSent, HTTPConnection):
    pass


class _HTTPSConnection(_MarksSent, HTTPSConnection):
    pass


class _HTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


class _MarkingAdapter(HTTPAdapter):
    """Every pool it makes, direct or through an HTTP(S) proxy, uses the marking connections."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools have connections of their own
            manager.pool_classes_by_scheme = _POOLS
        return manager


class _NoCredentials(AuthBase):
    """Set as the session's auth so that ``requests`` takes none from ``~/.netrc`` or the URL."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


def webhook_session() -> requests.Session:
    """A session for webhook calls: marks what was sent, adds no credentials, sends JSON."""
    session = requests.Session()
    adapter = _MarkingAdapter()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.auth = _NoCredentials()
    session.headers["Content-Type"] = "application/json"
    return session


@contextmanager
def watched_attempt() -> Iterator[SendAttempt]:
    """Watch one exchange made inside the block; read the result with :func:`request_was_sent`."""
    attempt = SendAttempt()
    token = _ATTEMPT.set(attempt)
    try:
        yield attempt
    finally:
        _ATTEMPT.reset(token)


# Raised by requests before any connection is made, or while connecting: nothing was sent.
_NEVER_SENT_TYPES: tuple[type[BaseException], ...] = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.ProxyError,
    requests.exceptions.ConnectTimeout,
)


def request_was_sent(attempt: SendAttempt, err: BaseException) -> bool:
    """Whether the failed exchange ``attempt`` may have delivered its request (``err`` ended it)."""
    if attempt.observed:
        return attempt.sent
    if not isinstance(err, requests.RequestException):
        return False  # a local error (an unreadable CA bundle, a timeout the OS refuses) before any I/O
    if isinstance(err, _NEVER_SENT_TYPES):
        return False
    reason = err.args[0] if err.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    # A refused connection or a failed DNS look-up (NameResolutionError is a NewConnectionError).
    # An SSLError is not here: unobserved, it may come from reading the answer.
    return not isinstance(reason, NewConnectionError)


def post_once(session: requests.Session, url: str, data: bytes, timeout: float, conn_id: str) -> requests.Response:
    """POST ``data`` once; a failed exchange says whether the request may have reached the service."""
    from airflow_octorpa.exceptions import OctoRpaTransportError

    with watched_attempt() as attempt:
        try:
            return session.post(url, data=data, timeout=timeout, allow_redirects=False)
        except Exception as err:
            del data  # the signed body, out of the traceback's locals
            # Only a failure before the request's first byte proves it never left; anything later
            # (a read timeout, a reset, a TLS error while reading the answer) may have started a run.
            sent = request_was_sent(attempt, err)
            raise OctoRpaTransportError(
                f"Calling the Octopus RPA webhook (connection {conn_id!r}) failed: {type(err).__name__}. "
                + (
                    "The request may have reached the service, so the app may have started: check "
                    "the Octopus RPA console before triggering again."
                    if sent
                    else "The request never left this machine, so nothing was started: check the URL, "
                    "the network and any proxy, then retry."
                ),
                request_sent=sent,
            ) from None
