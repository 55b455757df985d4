"""``[core] hostname_callable`` for the distributed suite: each Celery worker names itself from
``OCTORPA_WORKER_NAME``, so task instances show which worker ran them on one machine."""

from __future__ import annotations

import os
import socket


def get() -> str:
    return os.environ.get("OCTORPA_WORKER_NAME") or socket.getfqdn()
