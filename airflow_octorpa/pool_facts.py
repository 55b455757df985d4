"""Whether a pool counts deferred tasks, told where a trigger task can read it.

A deferred slot hold keeps its pool slot only in a pool that counts deferred tasks
(``include_deferred``). ``airflow pools set`` and the UI's checkbox default to not counting them;
in such a pool a deferred hold frees its slot at once and the account's limits break. So a
deferrable trigger task defers its hold only when it knows its pool counts deferred tasks, and
keeps the hold in the worker otherwise (:func:`facts_of` says ``None`` when it cannot tell).

Airflow 2's workers read the pool from the metadata database. Airflow 3's cannot (the Task SDK
has no call for pools), so the provider's listener, which runs in the scheduler, copies every
pool's ``slots`` and ``include_deferred`` into the Variable ``octorpa_pools`` when a DAG run
starts or ends (:func:`publish_pool_facts`; written only when something changed). A pool changed
since then is seen when the next DAG run starts; ``octorpa doctor`` checks the pool itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

POOL_FACTS_KEY = "octorpa_pools"
_DESCRIPTION = (
    "airflow-provider-octorpa: each pool's slots and whether it counts deferred tasks, copied here by the "
    "scheduler for Airflow 3's workers, which cannot read pools. Rewritten when it changes; do not edit."
)


def read_pools(session: Any) -> dict[str, dict[str, Any]]:
    """Every pool's slots and whether it counts deferred tasks, from the metadata database."""
    from airflow.models.pool import Pool
    from sqlalchemy import select

    rows = session.execute(select(Pool.pool, Pool.slots, Pool.include_deferred)).all()
    return {name: {"slots": slots, "include_deferred": bool(counts)} for name, slots, counts in rows}


def publish_pool_facts(session: Any) -> bool:
    """Copy :func:`read_pools` into the ``octorpa_pools`` Variable; True when it changed."""
    from airflow_octorpa.storage import put_text

    return put_text(session, POOL_FACTS_KEY, json.dumps(read_pools(session), sort_keys=True), _DESCRIPTION)


@dataclass(frozen=True)
class PoolFacts:
    """What is known here of one pool: ``exists`` and the rest are None when it cannot be told."""

    exists: bool | None
    slots: int | None = None
    counts_deferred: bool | None = None


def facts_of(pool: str) -> PoolFacts:
    """One read of what is known of ``pool`` (Airflow 3: the published Variable; 2: the database)."""
    from airflow_octorpa.version_compat import AIRFLOW_V_3

    try:
        facts = _published_facts() if AIRFLOW_V_3 else _facts_from_the_database()
    except Exception:  # noqa: BLE001 - cannot tell: the caller acts on None
        return PoolFacts(None)
    return facts_in(facts, pool)


def facts_in(facts: Any, pool: str) -> PoolFacts:
    """What ``facts`` (:func:`read_pools`' answer, or its published copy) say of ``pool``."""
    if not isinstance(facts, dict) or "default_pool" not in facts:
        return PoolFacts(None)  # never published (every Airflow has default_pool): cannot tell
    own = facts.get(pool)
    if not isinstance(own, dict):
        return PoolFacts(False)
    slots, counts = own.get("slots"), own.get("include_deferred")
    return PoolFacts(
        True,
        slots if isinstance(slots, int) and not isinstance(slots, bool) else None,
        counts if isinstance(counts, bool) else None,
    )


def pool_slots(pool: str) -> int | None:
    """How many slots ``pool`` has, or None when that cannot be told here."""
    return facts_of(pool).slots


def _facts_from_the_database() -> dict[str, Any]:
    from airflow.utils.session import create_session

    with create_session() as session:
        return read_pools(session)


def _published_facts() -> Any:
    from airflow.providers.common.compat.sdk import Variable

    text = Variable.get(POOL_FACTS_KEY, None)
    return json.loads(text) if text else {}
