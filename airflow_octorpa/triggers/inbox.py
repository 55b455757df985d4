"""The asset watcher's trigger of an inbox (see :mod:`airflow_octorpa.callbacks.inbox`), and a
helper that builds the watched asset."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.providers.common.compat.triggers import BaseEventTrigger
from airflow.triggers.base import TriggerEvent

from airflow_octorpa.version_compat import AIRFLOW_V_3

DEFAULT_POLL_INTERVAL = 1.0
BATCH = 20  # reports emitted before waiting for their events to be stored
# An emitted report whose event is not stored by then (a triggerer's event lost with it) is emitted
# again: the listener takes only the report after the cursor, so a second copy is never stored.
REEMIT_AFTER_SECONDS = 20.0
_NO_EVENT_SCHEDULING = (
    "Airflow {version} has no event-driven scheduling (asset watchers came in Airflow 3.0), so an "
    "Octopus RPA inbox cannot schedule DAGs here. Upgrade to Airflow 3; on {version}, have the app's "
    "run started by a DAG task (OctoRpaTriggerOperator) and wait for its report with OctoRpaRunSensor."
)


def require_event_scheduling() -> None:
    """Raise the error that says what to do instead, on an Airflow without asset watchers."""
    if not AIRFLOW_V_3:
        import airflow

        raise RuntimeError(_NO_EVENT_SCHEDULING.format(version=airflow.__version__))


class OctoRpaInboxTrigger(BaseEventTrigger):
    """
    Emit each report an inbox accepted, in the order it arrived, as one asset event.

    Runs in the triggerer as an ``AssetWatcher``'s trigger: it reads the inbox's cursor (the last
    report an event carries) and counter (the last report accepted), then the reports between, one
    Airflow Variable each, through the Task SDK. The event's payload (the asset event's
    ``extra["payload"]``) is the report:
    ``{"status", "outputs", "message", "reported_at", "report_id", "octorpa_inbox", "sequence"}``.
    The cursor moves in the transaction that stores the event (the provider's listener), so a
    report is carried by exactly one event even when the triggerer is killed, or a second one
    runs the trigger. Watch an inbox from one asset only (schedule any number of DAGs on it).

    :param inbox: The inbox's name (``octorpa inbox create <name>``).
    :param poll_interval: Seconds between reads of the cursor while nothing arrives (at least 1).
    """

    def __init__(self, inbox: str, poll_interval: float = DEFAULT_POLL_INTERVAL) -> None:
        require_event_scheduling()
        from airflow_octorpa.callbacks.inbox import check_name

        super().__init__()
        self.inbox = check_name(inbox)
        self.poll_interval = max(1.0, float(poll_interval))

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"inbox": self.inbox, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_octorpa.callbacks.inbox import delivered_key, received_key, report_key
        from airflow_octorpa.storage import get_text, json_object

        read = sync_to_async(lambda key: json_object(get_text(key)))
        warned = False
        while True:
            cursor = await self._cursor(read, delivered_key(self.inbox))
            if cursor is None:
                if not warned:
                    self.log.warning(
                        "No Octopus RPA inbox is named %r (yet): `octorpa inbox create %s` makes it; "
                        "this watcher waits for it.", self.inbox, self.inbox,
                    )  # fmt: skip
                    warned = True
                await asyncio.sleep(self.poll_interval * 10)
                continue
            warned = False
            received = await self._cursor(read, received_key(self.inbox))
            # An inbox made before the counter existed has none until its next report: probe then.
            last = cursor + BATCH if received is None else min(received, cursor + BATCH)
            held = []
            for sequence in range(cursor + 1, last + 1):
                report = await read(report_key(self.inbox, sequence))
                if report is None or report.get("sequence") != sequence:
                    break  # taken meanwhile (another triggerer's event): the cursor says, next round
                held.append(report)
            if not held:
                await asyncio.sleep(self.poll_interval)
                continue
            for report in held:
                self.log.info(
                    "Inbox %r: report %s (report_id %s, %s) becomes an asset event.",
                    self.inbox, report["sequence"], report.get("report_id"), report.get("status"),
                )  # fmt: skip
                yield TriggerEvent(report)
            await self._until_stored(read, delivered_key(self.inbox), held[-1]["sequence"])

    async def _cursor(self, read: Any, key: str) -> int | None:
        stored = await read(key)
        if stored is None or not isinstance(stored.get("sequence"), int):
            return None
        return int(stored["sequence"])

    async def _until_stored(self, read: Any, key: str, sequence: int) -> None:
        """Wait until the events of the emitted reports are stored (the cursor reaches the last)."""
        deadline = time.monotonic() + REEMIT_AFTER_SECONDS
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_interval)
            cursor = await self._cursor(read, key)
            if cursor is None or cursor >= sequence:
                return
        self.log.warning(
            "Inbox %r: the events of reports up to %s were not stored within %.0f s; emitting them again "
            "(only one event per report is ever stored).", self.inbox, sequence, REEMIT_AFTER_SECONDS,
        )  # fmt: skip


def inbox_asset(
    inbox: str, *, name: str | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL, **asset_kwargs: Any
) -> Any:
    """The asset ``octorpa://inbox/<inbox>`` whose watcher turns the inbox's reports into its events.

    Schedule DAGs on it (``schedule=[inbox_asset("orders")]``); a DAG run reads its report from
    ``triggering_asset_events``, see :func:`airflow_octorpa.callbacks.inbox.reports_of`.
    """
    require_event_scheduling()
    from airflow.providers.common.compat.assets import Asset
    from airflow.sdk import AssetWatcher

    from airflow_octorpa.callbacks.inbox import asset_uri, check_name

    check_name(inbox)
    watcher = AssetWatcher(
        name=f"octorpa_inbox_{inbox}", trigger=OctoRpaInboxTrigger(inbox=inbox, poll_interval=poll_interval)
    )
    return Asset(uri=asset_uri(inbox), name=name or asset_uri(inbox), watchers=[watcher], **asset_kwargs)
