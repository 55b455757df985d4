"""The listener that stores an inbox's report in exactly one asset event (Airflow 3).

``Trigger.submit_event`` stores an asset watcher's event in the triggerer's scoped session and
tells listeners before it commits; this joins that transaction (see
:func:`airflow_octorpa.callbacks.inbox.deliver_in_session`). Elsewhere (the api-server's asset
events, a task's outlets) the thread has no scoped session holding an inbox's event: nothing to do.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def on_asset_changed(asset: Any) -> None:
    from airflow import settings

    scoped: Any = getattr(settings, "Session", None)
    registry = getattr(scoped, "registry", None)
    if scoped is None or registry is None or not registry.has():
        return  # this thread has no scoped session, so no event of a trigger
    from airflow_octorpa.callbacks.inbox import deliver_in_session

    try:
        deliver_in_session(scoped())
    except Exception:  # a listener's error must not stop the triggerer; the event is checked again
        log.warning(
            "Could not check the Octopus RPA inbox events of asset %s.", getattr(asset, "uri", asset), exc_info=True
        )
