"""The provider's metrics, sent through Airflow's own ``Stats`` (StatsD or OpenTelemetry, as the
deployment configured ``[metrics]``), each tagged with the connection id.

| metric | kind | what it tells an operator |
| --- | --- | --- |
| ``octorpa.calls.started`` | counter | runs started (HTTP 2xx naming a flowProcessNo) |
| ``octorpa.calls.rate_limited`` | counter | calls the service refused for its rate limit: the budget is shared with something outside the pool |
| ``octorpa.calls.resent`` | counter | calls sent again after starting nothing (rate-limited or never sent) |
| ``octorpa.calls.unknown_outcome`` | counter | calls whose answer was lost: each needs a look in the Octopus RPA console |
| ``octorpa.slot_hold`` | timer | how long each call kept its pool slot after its exchange, so the limits hold |
"""

from __future__ import annotations

import datetime

STARTED = "octorpa.calls.started"
RATE_LIMITED = "octorpa.calls.rate_limited"
RESENT = "octorpa.calls.resent"
UNKNOWN_OUTCOME = "octorpa.calls.unknown_outcome"
SLOT_HOLD = "octorpa.slot_hold"


def count(name: str, conn_id: str) -> None:
    from airflow.providers.common.compat.sdk import Stats

    Stats.incr(name, tags={"conn_id": conn_id})


def slot_hold(seconds: float, conn_id: str) -> None:
    from airflow.providers.common.compat.sdk import Stats

    Stats.timing(SLOT_HOLD, datetime.timedelta(seconds=max(seconds, 0.0)), tags={"conn_id": conn_id})
