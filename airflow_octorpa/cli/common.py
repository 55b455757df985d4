"""What every ``octorpa`` command shares: exit codes, usage errors, the connection's settings."""

from __future__ import annotations

import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RATE_LIMITED, EXIT_UNKNOWN_OUTCOME = 0, 1, 2, 3, 4


class UsageError(Exception):
    """Bad usage or settings: nothing was sent (exit 2)."""


def connection_config(conn_id: str) -> Any:
    """The connection's checked settings, or a usage error naming what is wrong."""
    from airflow_octorpa.exceptions import OctoRpaConfigurationError
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    try:
        return OctoRpaHook(conn_id).config
    except OctoRpaConfigurationError as err:
        raise UsageError(str(err)) from None


def fail(code: int, message: str) -> int:
    print(message, file=sys.stderr)
    return code
