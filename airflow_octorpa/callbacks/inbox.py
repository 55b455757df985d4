"""Inboxes: standing URLs whose reports become asset events, whoever started the app.

Each inbox is four kinds of Airflow Variables, found by exact key (no scan):

- ``octorpa_inbox.<digest>``: its name, the SHA-256 of its token's secret, the next sequence
  number, when it last received a report and the recent reports' ids (for repeats);
- ``octorpa_inbox.<digest>.<sequence>``: an accepted report that no asset event carries yet;
- ``octorpa_inbox.<digest>.delivered``: the sequence number of the last report an event carries;
- ``octorpa_inbox.<digest>.received``: the sequence number of the last report accepted.

The route (api-server, webserver) appends reports with conditional updates. The watcher's trigger
(triggerer, Task SDK: no database) emits the report after the cursor, in order. The cursor moves in
the transaction that stores the asset event: the provider's listener joins it (see
:func:`deliver_in_session`), so a report is in exactly one committed event, whatever is killed when.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from airflow_octorpa import storage
from airflow_octorpa.callbacks.reports import RouteAnswer, RunReport

INBOX_PREFIX = "octorpa_inbox."
DELIVERED_SUFFIX = ".delivered"
RECEIVED_SUFFIX = ".received"
INBOX_PATH = "/v1/inbox/"  # under ROUTE_PREFIX
ASSET_SCHEME = "octorpa"
ASSET_URI_PREFIX = f"{ASSET_SCHEME}://inbox/"
MAX_PENDING = 1000  # reports kept for a watcher that is not (yet) there; then 429
REPEAT_WINDOW_SECONDS = 24 * 3600  # a report_id seen within it is a repeat
BODY_REPEAT_WINDOW_SECONDS = 600  # an identical body without report_id, within it, is a repeat
MAX_RECENT = 2000  # ids kept for repeats, newest first
MAX_REPORT_ID_CHARS = 128
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_TOKEN = re.compile(r"^[0-9a-f]{32}[A-Za-z0-9_-]{43}$")
_DESCRIPTION = (
    "airflow-provider-octorpa: an inbox's state, or a report it holds until an asset event carries it. "
    "Managed by octorpa inbox; do not edit."
)
_MARKER = "octorpa_inbox"  # the key of an event payload that an inbox's trigger emitted


class InboxError(ValueError):
    """A name, or an inbox, that is not what the command needs; the message says what to do."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InboxError(
            f"The inbox name {name!r:.60} is not valid: use 1 to 100 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit."
        )
    return name


def inbox_digest(name: str) -> str:
    return hashlib.sha256(("inbox:" + name).encode()).hexdigest()[:32]


def record_key(name: str) -> str:
    return INBOX_PREFIX + inbox_digest(name)


def report_key(name: str, sequence: int) -> str:
    return f"{record_key(name)}.{sequence}"


def delivered_key(name: str) -> str:
    return record_key(name) + DELIVERED_SUFFIX


def received_key(name: str) -> str:
    return record_key(name) + RECEIVED_SUFFIX


def asset_uri(name: str) -> str:
    return ASSET_URI_PREFIX + name


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the CLI (metadata database) ----------------------------------------------------------------


@dataclass(frozen=True)
class InboxSummary:
    name: str
    created_at: float
    last_report_at: float | None
    received: int
    delivered: int


def create(session: Any, name: str, base_url: str) -> str:
    """Make the inbox; its URL (shown once: only the secret's hash is kept)."""
    check_name(name)
    secret = secrets.token_urlsafe(32)  # 256 bits
    record = {"name": name, "token_sha256": _sha256(secret), "created_at": time.time(), "next_sequence": 1,
              "last_report_at": None, "recent": []}  # fmt: skip
    if not storage.insert_new(session, record_key(name), record, _DESCRIPTION):
        session.rollback()
        raise InboxError(f"An inbox named {name!r} exists; `octorpa inbox rotate {name}` gives it a new URL.")
    storage.insert_new(session, delivered_key(name), {"sequence": 0}, _DESCRIPTION)
    storage.insert_new(session, received_key(name), {"sequence": 0}, _DESCRIPTION)
    session.commit()
    return _url(base_url, name, secret)


def rotate(session: Any, name: str, base_url: str) -> str:
    """Replace the inbox's token (the old URL stops working); its new URL. Held reports stay."""
    raw, stored = _existing(session, name)
    secret = secrets.token_urlsafe(32)
    if not storage.replace_if_unchanged(session, record_key(name), raw, {**stored, "token_sha256": _sha256(secret),
                                                                         "rotated_at": time.time()}):  # fmt: skip
        session.rollback()
        raise InboxError(f"The inbox {name!r} changed while it was rotated; run the command again.")
    session.commit()
    return _url(base_url, name, secret)


def delete(session: Any, name: str) -> int:
    """Remove the inbox and the reports it still holds; how many reports were dropped."""
    from airflow.models.variable import Variable
    from sqlalchemy import delete as sql_delete

    raw, stored = _existing(session, name)
    cursor = _delivered(session, name)
    held = [report_key(name, sequence) for sequence in range(cursor + 1, int(stored["next_sequence"]))]
    table = Variable.__table__
    keys = [record_key(name), delivered_key(name), received_key(name), *held]
    for chunk in storage.chunks(keys):
        session.execute(sql_delete(table).where(table.c.key.in_(chunk)))
    session.commit()
    return len(held)


def summaries(session: Any) -> list[InboxSummary]:
    """Every inbox, by name: never its token."""
    from airflow.models.variable import Variable
    from sqlalchemy import select

    table = Variable.__table__
    keys = session.scalars(select(table.c.key).where(table.c.key.like(INBOX_PREFIX + "%"))).all()
    records = [key for key in keys if re.fullmatch(re.escape(INBOX_PREFIX) + "[0-9a-f]{32}", key)]
    found = []
    for _key, stored in sorted(storage.rows_of(session, records).items()):
        if stored is None or "name" not in stored:
            continue
        name = stored["name"]
        found.append(InboxSummary(name, stored.get("created_at", 0), stored.get("last_report_at"),
                                  int(stored.get("next_sequence", 1)) - 1, _delivered(session, name)))  # fmt: skip
    return sorted(found, key=lambda summary: summary.name)


def _existing(session: Any, name: str) -> tuple[str | None, dict[str, Any]]:
    check_name(name)
    found = storage.read_row(session, record_key(name))
    if found is None or found[1] is None:
        raise InboxError(
            f"No inbox is named {name!r}; `octorpa inbox list` shows them, `octorpa inbox create` makes one."
        )
    return found[0], found[1]


def _delivered(session: Any, name: str) -> int:
    found = storage.read_row(session, delivered_key(name))
    return int(found[1].get("sequence", 0)) if found is not None and found[1] is not None else 0


def _url(base_url: str, name: str, secret: str) -> str:
    from airflow_octorpa.callbacks.token import ROUTE_PREFIX

    return f"{base_url.rstrip('/')}{ROUTE_PREFIX}{INBOX_PATH}{inbox_digest(name)}{secret}"


# -- the route (metadata database) --------------------------------------------------------------

NOT_FOUND = RouteAnswer(404, {"accepted": False, "error": "No inbox has this token."})


def is_token(token: str) -> bool:
    """Whether ``token`` has an inbox token's shape (``<digest><secret>``)."""
    return bool(_TOKEN.match(token))


def accept(session: Any, token: str, report: RunReport, report_id: str | None) -> RouteAnswer:
    """Keep the report for the inbox the token names: committed before the answer is chosen.

    200 for a new report and for a repeat (the same ``report_id`` within a day, or an identical
    body without one within ten minutes), which is not kept twice; 429 when the inbox holds
    :data:`MAX_PENDING` reports no watcher has taken; 404 for a token no inbox has.
    """
    if not is_token(token):
        return NOT_FOUND
    key = INBOX_PREFIX + token[:32]
    repeat_key = "id:" + _sha256(report_id) if report_id is not None else "body:" + _sha256(_canonical(report))
    for _ in range(20):  # SQLite has no row lock: writers racing on one inbox re-read
        raw, stored = storage.read_row(session, key, lock=True) or (None, None)
        if stored is None:
            return NOT_FOUND
        if not hmac.compare_digest(str(stored.get("token_sha256", "")), _sha256(token[32:])):
            return NOT_FOUND
        now = time.time()
        recent = [entry for entry in stored.get("recent", []) if _fresh(entry, now)]
        for entry in recent:
            if entry[0] == repeat_key:
                return RouteAnswer(200, {"accepted": True, "repeat": True, "report_id": entry[3]})
        name, sequence = stored["name"], int(stored["next_sequence"])
        if sequence - 1 - _delivered(session, name) >= MAX_PENDING:
            return RouteAnswer(429, {"accepted": False, "error": (
                f"The inbox {name!r} holds {MAX_PENDING} reports that no asset watcher has taken; deploy a DAG "
                "that watches it (see the provider's Inbox page), then send this report again.")})  # fmt: skip
        given_id = report_id if report_id is not None else secrets.token_hex(16)
        recent = [[repeat_key, now, sequence, given_id], *recent][:MAX_RECENT]
        changed = {**stored, "next_sequence": sequence + 1, "last_report_at": now, "recent": recent}
        if not storage.replace_if_unchanged(session, key, raw, changed):
            session.rollback()
            continue
        payload = {"status": report.status, "outputs": report.outputs, "message": report.message,
                   "reported_at": now, "report_id": given_id, _MARKER: name, "sequence": sequence}  # fmt: skip
        if not storage.insert_new(session, report_key(name, sequence), payload, _DESCRIPTION):
            session.rollback()
            continue
        # The counter the watcher polls (the record is too big to read each second; probing for the
        # next report would make Airflow 3.0's Task SDK log a not-found error each poll). No check
        # needed: the record's write above already made this the only writer of this sequence.
        storage.put_text(session, received_key(name), json.dumps({"sequence": sequence}), _DESCRIPTION)
        session.commit()
        return RouteAnswer(200, {"accepted": True, "report_id": given_id})
    return RouteAnswer(503, {"accepted": False, "error": "The inbox is busy; send the report again."})


def _fresh(entry: list[Any], now: float) -> bool:
    window = REPEAT_WINDOW_SECONDS if str(entry[0]).startswith("id:") else BODY_REPEAT_WINDOW_SECONDS
    return now - float(entry[1]) < window


def _canonical(report: RunReport) -> str:
    return json.dumps([report.status, report.outputs, report.message], sort_keys=True, ensure_ascii=False)


# -- the asset event's transaction (the triggerer's database side) -------------------------------


def payload_of(event_extra: Any) -> dict[str, Any] | None:
    """The inbox report an asset event carries (``extra["payload"]``), None for any other event."""
    payload = event_extra.get("payload") if isinstance(event_extra, dict) else None
    if isinstance(payload, dict) and isinstance(payload.get(_MARKER), str) and isinstance(payload.get("sequence"), int):
        return payload
    return None


def reports_of(triggering_asset_events: Any, inbox: str | None = None) -> list[dict[str, Any]]:
    """The inbox reports that scheduled a DAG run, oldest first: pass the run's
    ``triggering_asset_events`` (a mapping of asset to events, or a list of events); ``inbox``
    keeps one inbox's. Each is ``{"status", "outputs", "message", "reported_at", "report_id",
    "octorpa_inbox", "sequence"}``."""
    groups = (
        triggering_asset_events.values() if hasattr(triggering_asset_events, "values") else [triggering_asset_events]
    )
    found = []
    for events in groups:
        for event in events or []:
            extra = event.get("extra") if isinstance(event, dict) else getattr(event, "extra", None)
            payload = payload_of(extra)
            if payload is not None and (inbox is None or payload[_MARKER] == inbox):
                found.append(payload)
    unique = {(payload[_MARKER], payload["sequence"]): payload for payload in found}
    return sorted(unique.values(), key=lambda payload: (payload.get("reported_at", 0), payload["sequence"]))


def deliver_in_session(session: Any) -> None:
    """Move each inbox's cursor in the transaction that stores its asset events.

    Called by the listener while ``Trigger.submit_event`` has the events flushed but not
    committed. The event of the report after the cursor moves it and removes the held report; an
    event of a report already delivered (a trigger re-emitting, or two running at once), out of
    order, or not the held one is taken out of the transaction, so it is never committed (nor the
    DAG runs it alone would have queued).
    """
    from airflow.models.asset import AssetEvent

    state = _this_transaction(session)
    for event in [obj for obj in list(session.identity_map.values()) if isinstance(obj, AssetEvent)]:
        payload = payload_of(event.extra)
        if payload is None or getattr(event, "_octorpa_seen", False) or event.source_task_id is not None:
            continue
        event._octorpa_seen = True
        name, sequence = payload[_MARKER], payload["sequence"]
        if (name, sequence) not in state.taken:  # else the same report's event for another asset
            try:
                delivered = _take(session, name, sequence, payload.get("report_id"))
            except Exception:  # noqa: BLE001 - not stored: the trigger emits the report again
                delivered = False
            if not delivered:
                _drop(session, event)
                continue
            state.taken.add((name, sequence))
        state.kept_assets.add(event.asset_id)
        _settle_before_commit(session)


def _take(session: Any, name: str, sequence: int, report_id: Any) -> bool:
    """Whether this transaction delivers the report: the one after the cursor, still held."""
    found = storage.read_row(session, delivered_key(name))
    if found is None or found[1] is None or int(found[1].get("sequence", 0)) != sequence - 1:
        return False
    held = storage.read_row(session, report_key(name, sequence))
    if held is None or held[1] is None or held[1].get("report_id") != report_id:
        return False  # not a report this inbox holds (an event someone made with such a payload)
    if not storage.replace_if_unchanged(session, delivered_key(name), found[0], {"sequence": sequence}):
        return False
    _forget_report(session, report_key(name, sequence))
    return True


def _drop(session: Any, event: Any) -> None:
    """Take the event out of the transaction, and the DAG runs that Airflow queues for it next
    (only those: a queued run that was there before stays)."""
    from airflow.models.asset import AssetDagRunQueue as Queued
    from sqlalchemy import select

    queued_before = frozenset(session.scalars(select(Queued.target_dag_id).where(Queued.asset_id == event.asset_id)))
    session.delete(event)
    _this_transaction(session).dropped.append((event.asset_id, queued_before))
    _settle_before_commit(session)


def _settle_before_commit(session: Any) -> None:
    from sqlalchemy import event as sql_event

    if not sql_event.contains(session, "before_commit", _settle_queue):
        sql_event.listen(session, "before_commit", _settle_queue)


def _settle_queue(session: Any) -> None:
    """Before the commit: remove the DAG runs queued for dropped events since, and date the queue
    entries of kept events' assets now.

    Airflow queues a DAG run once per asset and DAG: an event stored while the entry is there
    leaves it dated at the earlier event, and the scheduler's run then takes only the events up to
    that date, leaving this one to the asset's next event. Dated now, the entry covers it; an
    entry the scheduler is deleting (PostgreSQL: locked) is written anew, queueing the next run.
    """
    from airflow.models.asset import AssetDagRunQueue as Queued
    from sqlalchemy import delete, select

    if session.in_nested_transaction():
        return  # a savepoint's release (Airflow queues runs in one on SQLite); the commit comes later
    state = _this_transaction(session)
    for asset_id, queued_before in state.dropped:
        query = delete(Queued).where(Queued.asset_id == asset_id)
        if queued_before:
            query = query.where(Queued.target_dag_id.not_in(queued_before))
        session.execute(query.execution_options(synchronize_session=False))
    state.dropped.clear()
    for asset_id in sorted(state.kept_assets):
        dag_ids = session.scalars(select(Queued.target_dag_id).where(Queued.asset_id == asset_id)).all()
        for dag_id in sorted(dag_ids):
            session.execute(_queue_now(session, asset_id, dag_id))
    state.kept_assets.clear()


def _queue_now(session: Any, asset_id: int, dag_id: str) -> Any:
    """The statement that dates the queue entry (asset, DAG) now, writing it if it is gone."""
    from airflow.models.asset import AssetDagRunQueue as Queued
    from sqlalchemy import update
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    now = datetime.datetime.now(datetime.timezone.utc)
    dialect = session.get_bind().dialect.name
    values = {"asset_id": asset_id, "target_dag_id": dag_id, "created_at": now}
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        return (
            insert(Queued)
            .values(**values)
            .on_conflict_do_update(index_elements=["asset_id", "target_dag_id"], set_={"created_at": now})
        )
    if dialect == "mysql":
        return mysql.insert(Queued).values(**values).on_duplicate_key_update(created_at=now)
    return update(Queued).where(Queued.asset_id == asset_id, Queued.target_dag_id == dag_id).values(created_at=now)


def requeue_stranded(session: Any, dag_run: Any) -> int:
    """Queue again the inbox events that the scheduler's run creation stranded (SQLite); how many
    queue entries it wrote.

    On SQLite (no row locks) an event committed between the scheduler's read of a queue entry and
    its commit is not in the run it creates, and the entry is deleted with the run's creation: the
    event would wait for the asset's next one. Called as that run starts, in the scheduler's own
    transaction: an inbox event after the run's date, in no run of its DAG, with no queue entry,
    gets one dated now, so the scheduler's next loop creates the run that takes it.
    """
    from airflow.models.asset import AssetDagRunQueue as Queued
    from airflow.models.asset import AssetEvent, AssetModel, DagScheduleAssetReference
    from airflow.models.base import Base
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    consumed = Base.metadata.tables["dagrun_asset_event"]
    runs_of_dag = select(DagRun.id).where(DagRun.dag_id == dag_run.dag_id)
    in_a_run = select(consumed.c.event_id).where(consumed.c.dag_run_id.in_(runs_of_dag))
    queued = select(Queued.asset_id).where(Queued.target_dag_id == dag_run.dag_id)
    stranded = session.scalars(
        select(AssetEvent.asset_id)
        .distinct()
        .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        .join(DagScheduleAssetReference, DagScheduleAssetReference.asset_id == AssetEvent.asset_id)
        .where(
            DagScheduleAssetReference.dag_id == dag_run.dag_id,
            AssetModel.uri.startswith(ASSET_URI_PREFIX),
            AssetEvent.timestamp > dag_run.run_after,
            AssetEvent.id.not_in(in_a_run),
            AssetEvent.asset_id.not_in(queued),
        )
    ).all()
    for asset_id in stranded:
        session.execute(_queue_now(session, asset_id, dag_run.dag_id))
    return len(stranded)


@dataclass
class _TransactionState:
    taken: set[tuple[str, int]] = field(default_factory=set)  # (inbox, sequence) delivered
    dropped: list[tuple[int, frozenset[str]]] = field(default_factory=list)  # (asset id, queued before)
    kept_assets: set[int] = field(default_factory=set)  # the assets of the events it keeps


def _this_transaction(session: Any) -> _TransactionState:
    """What this transaction delivers and drops: a scoped session lives on, its transactions do not."""
    transaction = session.get_transaction()
    known = session.info.get("octorpa_inbox")
    if known is None or known[0]() is not transaction:
        known = (weakref.ref(transaction), _TransactionState())
        session.info["octorpa_inbox"] = known
    return known[1]


def _forget_report(session: Any, key: str) -> None:
    from airflow.models.variable import Variable
    from sqlalchemy import delete as sql_delete

    table = Variable.__table__
    session.execute(sql_delete(table).where(table.c.key == key))
