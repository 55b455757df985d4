"""Whether a URL can be a webhook's: the console's ``Webhook地址`` has one shape, and a web page's
address (the console itself, copied by mistake) another."""

from __future__ import annotations

from urllib.parse import urlsplit

WEBHOOK_URL_SHAPE = "https://api-rpa.bazhuayu.com/api/v1/bots/webhooks/<webhookId>/invoke"
_PAGE_SUFFIXES = (".html", ".htm", ".php", ".asp", ".aspx", ".jsp")


def _segments(url: str) -> list[str]:
    return [part for part in urlsplit(url).path.split("/") if part]


def not_a_webhook_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook's at all (refused before anything is sent), or None."""
    parts, segments = urlsplit(url), _segments(url)
    if parts.fragment:
        return "it has a '#...' part, which addresses a page in a browser and is never sent in a request"
    if not segments:
        return "it has no path: it names a server, not a webhook"
    if segments[-1].lower().endswith(_PAGE_SUFFIXES):
        return f"its path ends in a web page ({segments[-1][:60]!r}), not a webhook"
    return None


def has_webhook_shape(url: str) -> bool:
    """``.../webhooks/<webhookId>/invoke``, as the console shows it."""
    segments = _segments(url)
    return len(segments) >= 3 and segments[-1] == "invoke" and segments[-3] == "webhooks"


def shape_warning(url: str) -> str | None:
    """What to tell a user whose URL may work (a gateway of theirs) but is not the console's shape."""
    if has_webhook_shape(url):
        return None
    return (
        f"the webhook URL's path is not of the shape the Octopus RPA console shows ({WEBHOOK_URL_SHAPE}); "
        "a web page's address copied instead of the trigger's Webhook地址 answers calls with HTML and starts "
        "nothing. Ignore this only if the URL is a gateway of yours in front of the service."
    )
