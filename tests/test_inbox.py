"""Inboxes: the route keeps each report once and in order, the CLI manages them, and on Airflow 3
each report becomes exactly one asset event through Airflow's own ``Trigger.submit_event`` (the
triggerer's database side) and the provider's listener. The real components, a killed triggerer
included, are in test_scheduler; two triggerers in tests_distributed."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid

import pytest
import requests

from airflow_octorpa.callbacks import inbox
from tests.support.airflow_helpers import AIRFLOW_V_3, dag_bag, sync_bag
from tests.support.callback_server import BAD_REPORTS, report_route, send_bad_reports
from tests.support.cli_output import octorpa

pytestmark = pytest.mark.usefixtures("airflow_db")
needs_airflow_3 = pytest.mark.skipif(not AIRFLOW_V_3, reason="asset watchers came in Airflow 3.0")


@pytest.fixture(scope="module")
def route():
    with report_route() as base:
        yield base


def _name() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


def _create(name: str, base: str) -> str:
    from airflow.utils.session import create_session

    with create_session() as session:
        return inbox.create(session, name, base)


def _stored(key: str):
    from airflow.utils.session import create_session

    from airflow_octorpa import storage

    with create_session() as session:
        found = storage.read_row(session, key)
    return None if found is None else found[1]


def _inbox_variables() -> int:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    table = Variable.__table__
    with create_session() as session:
        return session.scalar(select(func.count()).where(table.c.key.like(inbox.INBOX_PREFIX + "%")))


def test_reports_are_kept_once_each_in_the_order_they_arrived(route):
    name = _name()
    url = _create(name, route)
    assert url.startswith(f"{route}/octorpa/v1/inbox/") and inbox.is_token(url.rsplit("/", 1)[1])

    first = requests.post(url, json={"status": "succeeded", "outputs": {"订单号": "SO-1"}}, timeout=30)
    same_body = requests.post(url, json={"outputs": {"订单号": "SO-1"}, "status": "succeeded"}, timeout=30)
    own_id = requests.post(url, json={"status": "succeeded", "outputs": {"n": 2}, "report_id": "run-2"}, timeout=30)
    same_id = requests.post(url, json={"status": "failed", "message": "again", "report_id": "run-2"}, timeout=30)
    by_get = requests.get(url, params={"status": "failed", "message": "没有订单", "report_id": "run-3"}, timeout=30)

    assert [answer.status_code for answer in (first, same_body, own_id, same_id, by_get)] == [200] * 5
    assert same_body.json() == {"accepted": True, "repeat": True, "report_id": first.json()["report_id"]}
    assert same_id.json() == {"accepted": True, "repeat": True, "report_id": "run-2"}
    assert "repeat" not in by_get.json()
    held = [_stored(inbox.report_key(name, sequence)) for sequence in (1, 2, 3, 4)]
    assert held[3] is None
    assert [(report["sequence"], report["status"], report["outputs"], report["report_id"]) for report in held[:3]] == [
        (1, "succeeded", {"订单号": "SO-1"}, first.json()["report_id"]),
        (2, "succeeded", {"n": 2}, "run-2"),
        (3, "failed", {}, "run-3"),
    ]
    assert held[2]["message"] == "没有订单" and held[0]["octorpa_inbox"] == name
    assert held[0]["reported_at"] <= held[1]["reported_at"] <= held[2]["reported_at"]
    record = _stored(inbox.record_key(name))
    assert _stored(inbox.received_key(name)) == {"sequence": 3}  # what the watcher polls
    assert record["next_sequence"] == 4 and record["last_report_at"] == held[2]["reported_at"]
    assert url.rsplit("/", 1)[1][32:] not in json.dumps(record)  # only the secret's hash is kept


def test_an_unknown_or_forged_token_is_404_and_creates_nothing(route):
    url = _create(_name(), route)
    before = _inbox_variables()
    digest = url.rsplit("/", 1)[1][:32]
    forged = [
        f"{route}/octorpa/v1/inbox/{secrets.token_hex(16)}{secrets.token_urlsafe(32)}",  # no such inbox
        f"{route}/octorpa/v1/inbox/{digest}{secrets.token_urlsafe(32)}",  # its inbox, another secret
        f"{route}/octorpa/v1/inbox/{digest}",  # not a token's shape
        f"{route}/octorpa/v1/inbox/..%2F..%2Fapi%2Fv2%2Fdags",
    ]
    answers = [requests.post(other, json={"status": "succeeded"}, timeout=30) for other in forged]
    assert [answer.status_code for answer in answers] == [404] * 4
    for answer in answers[:3]:  # the last is no route's path at all
        assert answer.json() == {"accepted": False, "error": "No inbox has this token."}
    assert _inbox_variables() == before


def test_what_the_callback_route_refuses_the_inbox_refuses_and_stores_nothing(route):
    name = _name()
    url = _create(name, route)
    assert send_bad_reports(url) == dict.fromkeys(BAD_REPORTS, 400)
    refused = {
        "progress": requests.post(url, json={"status": "running", "progress": 0.5}, timeout=30),
        "empty GET": requests.get(url, timeout=30),
        "long report_id": requests.post(url, json={"status": "succeeded", "report_id": "x" * 129}, timeout=30),
        "report_id not text": requests.post(url, json={"status": "succeeded", "report_id": 7}, timeout=30),
        "two report_ids": requests.get(
            url, params=[("status", "failed"), ("report_id", "a"), ("report_id", "b")], timeout=30
        ),  # fmt: skip
        "unknown status": requests.post(url, json={"status": "done"}, timeout=30),
    }
    assert {what: answer.status_code for what, answer in refused.items()} == dict.fromkeys(refused, 400)
    assert "callback URL" in refused["progress"].json()["error"]
    too_big = requests.post(url, data=b"{" + b" " * (64 * 1024 + 10) + b"}", timeout=30,
                            headers={"Content-Type": "application/json"})  # fmt: skip
    assert too_big.status_code == 413
    assert _stored(inbox.record_key(name))["next_sequence"] == 1


def test_an_inbox_no_watcher_takes_from_answers_429_at_its_bound(route, monkeypatch):
    monkeypatch.setattr(inbox, "MAX_PENDING", 2)  # the route runs in this process
    name = _name()
    url = _create(name, route)
    answers = [requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30) for n in range(3)]

    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert "holds 2 reports that no asset watcher has taken" in answers[2].json()["error"]
    assert requests.post(url, json={"status": "succeeded", "outputs": {"n": 0}}, timeout=30).status_code == 200
    assert _stored(inbox.report_key(name, 3)) is None


@needs_airflow_3
def test_the_cli_prints_the_url_once_and_lists_no_token(route):
    env = {"AIRFLOW__OCTORPA__CALLBACK_BASE_URL": route}
    name = _name()
    created = octorpa("inbox", "create", name, env=env)
    assert created.returncode == 0, created.stderr
    (url,) = [line for line in created.stdout.splitlines() if line.startswith(route)]
    assert f"octorpa://inbox/{name}" in created.stdout
    again = octorpa("inbox", "create", name, env=env)
    assert again.returncode != 0 and f"An inbox named {name!r} exists" in again.stderr

    for n in (1, 2):
        assert requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30).status_code == 200
    listed = octorpa("inbox", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line.split() for line in listed.stdout.splitlines() if line.startswith(name + " ")]
    assert row[-3:] == ["2", "0", "2"] and row[3] != "never"  # received, delivered, held; a last report
    assert url.rsplit("/", 1)[1] not in listed.stdout and url.rsplit("/", 1)[1][32:] not in listed.stdout

    rotated = octorpa("inbox", "rotate", name, env=env)
    assert rotated.returncode == 0, rotated.stderr
    (new_url,) = [line for line in rotated.stdout.splitlines() if line.startswith(route)]
    assert new_url != url
    assert requests.post(url, json={"status": "succeeded"}, timeout=30).status_code == 404
    assert requests.post(new_url, json={"status": "succeeded"}, timeout=30).status_code == 200

    deleted = octorpa("inbox", "delete", name, env=env)
    assert deleted.returncode == 0 and "the 3 reports it still held" in deleted.stdout, deleted.stderr
    assert requests.post(new_url, json={"status": "succeeded"}, timeout=30).status_code == 404
    for key in (inbox.record_key(name), inbox.report_key(name, 1), inbox.received_key(name), inbox.delivered_key(name)):
        assert _stored(key) is None, key
    missing = octorpa("inbox", "rotate", name, env=env)
    assert missing.returncode != 0 and f"No inbox is named {name!r}" in missing.stderr


def test_a_bad_name_is_refused_with_what_is_allowed():
    with pytest.raises(inbox.InboxError, match="use 1 to 100 letters"):
        inbox.check_name("../orders")


@pytest.mark.skipif(AIRFLOW_V_3, reason="Airflow 2.11's behaviour")
def test_airflow_2_says_it_has_no_event_scheduling_and_what_to_do():
    from airflow_octorpa.triggers.inbox import OctoRpaInboxTrigger, inbox_asset

    for build in (lambda: inbox_asset("orders"), lambda: OctoRpaInboxTrigger(inbox="orders")):
        with pytest.raises(RuntimeError, match="no event-driven scheduling .* OctoRpaRunSensor"):
            build()
    done = octorpa("inbox", "create", "orders", env={"AIRFLOW__OCTORPA__CALLBACK_BASE_URL": "http://127.0.0.1:1"})
    assert done.returncode != 0 and "no event-driven scheduling" in done.stderr


# -- Airflow 3: the asset events ---------------------------------------------------------------


def _watched(name: str):
    """A consumer DAG scheduled on the inbox's asset, written to the database as the DAG processor
    writes it (the asset, its watcher and the watcher's trigger rows) and unpaused; its trigger's id."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.models.dag import DagModel
    from airflow.models.trigger import Trigger
    from airflow.providers.common.compat.sdk import DAG
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_octorpa.triggers.inbox import inbox_asset

    with DAG(f"consumer_{name.replace('-', '_')}", schedule=[inbox_asset(name)]) as dag:
        EmptyOperator(task_id="load")
    dag.relative_fileloc = "test_inbox.py"
    DagBundlesManager().sync_bundles_to_db()
    bag = dag_bag("/dev/null")
    bag.bag_dag(dag)
    sync_bag(bag)
    with create_session() as session:
        session.get(DagModel, dag.dag_id).is_paused = False
    sync_bag(bag)  # the watchers of an unpaused DAG's assets get their triggers
    with create_session() as session:
        triggers = session.scalars(select(Trigger)).all()
        (trigger,) = [row for row in triggers if row.kwargs.get("inbox") == name]
        return dag.dag_id, trigger.id


def _submit(trigger_id: int, report: dict) -> None:
    from airflow.models.trigger import Trigger
    from airflow.triggers.base import TriggerEvent

    Trigger.submit_event(trigger_id=trigger_id, event=TriggerEvent(report))


def _events(name: str) -> list[int]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == inbox.asset_uri(name)).order_by(AssetEvent.id)
        ).all()  # fmt: skip
    return [inbox.payload_of(extra)["sequence"] for extra in extras]


def _queued(dag_id: str) -> int:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).where(AssetDagRunQueue.target_dag_id == dag_id))


def _queue_date(dag_id: str):
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return session.scalar(select(AssetDagRunQueue.created_at).where(AssetDagRunQueue.target_dag_id == dag_id))


def _last_event_date(name: str):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(
            select(func.max(AssetEvent.timestamp)).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == inbox.asset_uri(name))
        )  # fmt: skip


def _unqueue(dag_id: str) -> None:
    from airflow.models.asset import AssetDagRunQueue
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id))


@pytest.fixture
def reads_as_a_server(monkeypatch):
    """The trigger reads Variables through the Task SDK, which the triggerer serves; outside it, the
    Task SDK reads the metadata database only in a process that says it is a server (as the CLI)."""
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")


async def _first_events(trigger, count: int) -> list[dict]:
    found = []
    async for event in trigger.run():
        found.append(event.payload)
        if len(found) == count:
            return found
    return found


@needs_airflow_3
def test_each_report_is_one_asset_event_in_order_whatever_is_emitted_again(route, reads_as_a_server):
    from airflow_octorpa.triggers.inbox import OctoRpaInboxTrigger

    name = _name()
    url = _create(name, route)
    dag_id, trigger_id = _watched(name)
    for n in (1, 2, 3):
        assert requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30).status_code == 200
    reports = asyncio.run(asyncio.wait_for(_first_events(OctoRpaInboxTrigger(inbox=name), 3), 30))
    assert [report["sequence"] for report in reports] == [1, 2, 3]
    assert [report["outputs"] for report in reports] == [{"n": 1}, {"n": 2}, {"n": 3}]

    _submit(trigger_id, reports[0])
    assert _events(name) == [1] and _queued(dag_id) == 1
    _submit(trigger_id, reports[0])  # re-emitted (a restarted triggerer), or emitted by a second one
    _submit(trigger_id, reports[2])  # out of order: 2 is not stored yet
    assert _events(name) == [1] and _queued(dag_id) == 1  # the queued run stays
    _unqueue(dag_id)  # as the scheduler does when it creates the run
    _submit(trigger_id, reports[0])
    assert _events(name) == [1] and _queued(dag_id) == 0  # a dropped event queues nothing
    forged = {**reports[1], "report_id": "not-the-held-one"}
    _submit(trigger_id, forged)
    assert _events(name) == [1]

    _submit(trigger_id, reports[1])
    _submit(trigger_id, reports[2])  # while 2's queue entry is there
    assert _events(name) == [1, 2, 3] and _queued(dag_id) == 1
    # The entry is dated after the last event, so the run the scheduler makes of it takes that event
    # too (Airflow would leave it dated at the event that wrote it, and 3 to the asset's next event).
    assert _queue_date(dag_id) >= _last_event_date(name)
    assert _stored(inbox.delivered_key(name)) == {"sequence": 3}
    assert [_stored(inbox.report_key(name, sequence)) for sequence in (1, 2, 3)] == [None, None, None]
    assert "0" in [line.split()[-1] for line in octorpa("inbox", "list").stdout.splitlines() if line.startswith(name)]


def _asset_run(dag_id: str, run_id: str, consumed: list[int], run_after) -> int:
    """An asset-triggered DAG run as the scheduler creates it: the events it takes, its queue
    entry deleted in the same transaction; its id."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunType
    from sqlalchemy import delete, select

    with create_session() as session:
        run = DagRun(dag_id=dag_id, run_id=run_id, run_type=DagRunType.ASSET_TRIGGERED, run_after=run_after,
                     logical_date=None, state=DagRunState.QUEUED)  # fmt: skip
        run.consumed_asset_events.extend(session.scalars(select(AssetEvent).where(AssetEvent.id.in_(consumed))))
        session.add(run)
        session.execute(delete(AssetDagRunQueue).where(AssetDagRunQueue.target_dag_id == dag_id))
        session.flush()
        return run.id


def _starts(run_id: int) -> None:
    """The scheduler starting the run: its listeners are told in its own transaction."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    from airflow_octorpa.plugins import inbox_events

    with create_session() as session:
        run = session.get(DagRun, run_id)
        run.state = DagRunState.RUNNING
        inbox_events.on_dag_run_running(dag_run=run, msg="started")


@needs_airflow_3
def test_an_event_a_run_creation_passed_on_sqlite_is_queued_again_as_that_run_starts(route, reads_as_a_server):
    """SQLite has no row locks: an event committed between the scheduler's read of the queue entry
    and its commit is in no run, and its entry is deleted with the run's creation."""
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from airflow_octorpa.triggers.inbox import OctoRpaInboxTrigger

    name = _name()
    url = _create(name, route)
    dag_id, trigger_id = _watched(name)
    for n in (1, 2):
        assert requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30).status_code == 200
    reports = asyncio.run(asyncio.wait_for(_first_events(OctoRpaInboxTrigger(inbox=name), 2), 30))
    _submit(trigger_id, reports[0])
    run_after = _queue_date(dag_id)
    with create_session() as session:
        first_event = session.scalar(select(func.max(AssetEvent.id)))
    _submit(trigger_id, reports[1])  # committed while the scheduler creates the run of the first
    first_run = _asset_run(dag_id, "asset_triggered__1", [first_event], run_after)
    assert _events(name) == [1, 2] and _queued(dag_id) == 0  # 2 would wait for the asset's next event

    _starts(first_run)
    assert _queued(dag_id) == 1 and _queue_date(dag_id) >= _last_event_date(name)
    _starts(first_run)  # told again: the entry is there, nothing more
    assert _queued(dag_id) == 1

    with create_session() as session:
        second_event = session.scalar(select(func.max(AssetEvent.id)))
    second_run = _asset_run(dag_id, "asset_triggered__2", [second_event], _queue_date(dag_id))
    _starts(second_run)
    _starts(first_run)
    assert _queued(dag_id) == 0  # every event is in a run: nothing to queue


@needs_airflow_3
def test_the_trigger_emits_what_is_after_the_cursor_and_waits_for_an_inbox_that_is_not_there_yet(
    route, reads_as_a_server
):
    from airflow_octorpa.triggers.inbox import OctoRpaInboxTrigger

    name = _name()
    trigger = OctoRpaInboxTrigger(inbox=name, poll_interval=1)
    assert trigger.serialize() == (
        "airflow_octorpa.triggers.inbox.OctoRpaInboxTrigger",
        {"inbox": name, "poll_interval": 1.0},
    )
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(_first_events(trigger, 1), 3))
    url = _create(name, route)
    dag_id, trigger_id = _watched(name)
    for n in (1, 2):
        requests.post(url, json={"status": "succeeded", "outputs": {"n": n}}, timeout=30)
    (first,) = asyncio.run(asyncio.wait_for(_first_events(OctoRpaInboxTrigger(inbox=name), 1), 30))
    _submit(trigger_id, first)
    (second,) = asyncio.run(asyncio.wait_for(_first_events(OctoRpaInboxTrigger(inbox=name), 1), 30))
    assert (first["sequence"], second["sequence"]) == (1, 2)


def test_reports_of_gives_a_runs_reports_oldest_first_once_each():
    def event(name, sequence, at):
        return {"extra": {"from_trigger": True, "payload": {inbox._MARKER: name, "sequence": sequence,
                                                            "reported_at": at, "outputs": {}}}}  # fmt: skip

    events = {
        "octorpa://inbox/a": [event("a", 2, 20.0), event("a", 1, 10.0), event("a", 2, 20.0)],
        "other": [{"extra": {"rows": 3}}, event("b", 1, 15.0)],
    }
    assert [(r[inbox._MARKER], r["sequence"]) for r in inbox.reports_of(events)] == [("a", 1), ("b", 1), ("a", 2)]
    assert [r["sequence"] for r in inbox.reports_of(events, inbox="a")] == [1, 2]
    assert inbox.reports_of({}) == []


def test_the_emulators_own_schedule_starts_runs_that_report_to_an_inbox(route, emulator):
    from airflow_octorpa.emulator import WebhookSpec

    name = _name()
    url = _create(name, route)
    emulator.state.put_webhook(
        WebhookSpec.reporting_app(
            "nightly-export", "s", name="导出订单", after=0.1, outputs={"文件": "a.xlsx"}, fault="twice"
        )  # fmt: skip
    )
    control = f"{emulator.url}/_emulator/schedules/nightly-export"
    answer = requests.post(control, json={"inbox_url": url, "params": {"订单号": "ALL"}, "count": 2, "every": 0.5},
                           timeout=10)  # fmt: skip
    assert answer.json() == {"scheduled": 2, "webhook": "nightly-export"}, answer.text

    def reported() -> list[dict]:
        return [run for run in emulator.state.snapshot("runs") if len(run.get("callback", {}).get("reports", [])) == 2]

    deadline = time.monotonic() + 30
    while len(reported()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    runs = reported()
    assert [run["started_by"] for run in runs] == ["schedule", "schedule"] and emulator.state.snapshot("calls") == []
    for run in runs:  # the app's report and its retry: one kept, the retry a repeat
        first, again = (json.loads(report["body"]) for report in run["callback"]["reports"])
        assert first == {"accepted": True, "report_id": run["flow_process_no"]}
        assert again == {"accepted": True, "repeat": True, "report_id": run["flow_process_no"]}
    held = [_stored(inbox.report_key(name, sequence)) for sequence in (1, 2, 3)]
    assert [report["report_id"] for report in held[:2]] == [run["flow_process_no"] for run in runs]
    assert held[0]["outputs"] == {"文件": "a.xlsx"} and held[2] is None

    refused = {
        "no such webhook": requests.post(
            f"{emulator.url}/_emulator/schedules/nope", json={"inbox_url": url}, timeout=10
        ),  # fmt: skip
        "no URL": requests.post(control, json={"count": 1}, timeout=10),
        "count 0": requests.post(control, json={"inbox_url": url, "count": 0}, timeout=10),
        "unknown field": requests.post(control, json={"inbox_url": url, "cron": "* * * * *"}, timeout=10),
    }
    assert {what: answer.status_code for what, answer in refused.items()} == {
        "no such webhook": 404, "no URL": 400, "count 0": 400, "unknown field": 400}  # fmt: skip
