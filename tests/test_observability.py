"""What operators see from outside: OpenLineage events (file transport) and StatsD metrics, from
one real ``airflow dags test`` run against the emulator."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from tests.support.settings import (
    ORDER_SECRET,
    ORDER_WEBHOOK,
    VENDOR_SECRET,
    VENDOR_WEBHOOK,
    airflow_cli,
    connection_json,
)

pytest.importorskip("airflow.providers.openlineage")

DAGS = Path(__file__).resolve().parent / "dags"
# One call per 8 s from one slot: an 8 s hold, long enough for the deferred task to defer.
LIMITS = {"rate_limits": "1/8 seconds", "pool_size": 1}


class StatsdListener:
    """A UDP socket on a free loopback port that keeps every StatsD line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                continue
            self.lines.extend(data.decode(errors="replace").splitlines())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture(scope="module")
def observed_run(_emulator_server, airflow_db, tmp_path_factory):
    """Run the DAG once; yield the OpenLineage events, the StatsD lines and the emulator's runs."""
    emulator = _emulator_server
    emulator.state.reset()
    emulator.state.faults.queue(ORDER_WEBHOOK, [{"kind": "rate_limit"}])
    emulator.state.faults.queue(VENDOR_WEBHOOK, [{"kind": "status_after_start", "status": 502}])
    events_file = tmp_path_factory.mktemp("openlineage") / "events.jsonl"
    statsd = StatsdListener()
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW_CONN_OCTORPA_DEFAULT": connection_json(emulator.webhook_url(ORDER_WEBHOOK), ORDER_SECRET, **LIMITS),
        "AIRFLOW_CONN_OCTORPA_VENDOR": connection_json(emulator.webhook_url(VENDOR_WEBHOOK), VENDOR_SECRET, **LIMITS),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "octorpa-test",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
        "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
    }
    try:
        done = airflow_cli("dags", "test", "octorpa_observed", env=env, timeout=300)
    finally:
        statsd.close()
    events = [json.loads(line) for line in events_file.read_text().splitlines()] if events_file.exists() else []
    yield {"done": done, "events": events, "statsd": statsd.lines, "runs": emulator.state.snapshot("runs")}


def _complete_facets(events: list[dict], task_id: str) -> dict:
    (event,) = [
        e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == f"octorpa_observed.{task_id}"
    ]
    return event["run"]["facets"]


@pytest.mark.parametrize("task_id", ["worker", "deferred"])
def test_openlineage_complete_event_names_the_webhook_robot_and_run(observed_run, task_id):
    runs = {r["params"].get("订单号"): r["flow_process_no"] for r in observed_run["runs"]}
    facet = _complete_facets(observed_run["events"], task_id)["octorpa"]
    order = {"worker": "OBS-W", "deferred": "OBS-D"}[task_id]
    assert facet["webhook"] == ORDER_WEBHOOK and facet.get("robot") is None  # OpenLineage drops nulls
    assert facet["flowProcessNo"] == runs[order]
    assert facet["flowId"] == "flow-order-processing"
    assert order not in json.dumps(facet)  # no parameter value


def test_openlineage_events_never_carry_the_secret_or_a_sign(observed_run):
    text = json.dumps(observed_run["events"])
    assert observed_run["events"], observed_run["done"].stdout[-3000:] + observed_run["done"].stderr[-3000:]
    assert ORDER_SECRET not in text and VENDOR_SECRET not in text and '"sign"' not in text


def test_statsd_receives_the_calls_tagged_by_connection(observed_run):
    lines = observed_run["statsd"]

    def count(metric: str, conn_id: str) -> int:
        prefix = f"airflow.{metric},conn_id={conn_id}:"
        return sum(int(line[len(prefix) :].split("|")[0]) for line in lines if line.startswith(prefix))

    assert count("octorpa.calls.started", "octorpa_default") == 2
    assert count("octorpa.calls.rate_limited", "octorpa_default") == 1
    assert count("octorpa.calls.resent", "octorpa_default") == 1
    assert count("octorpa.calls.unknown_outcome", "octorpa_vendor") == 1
    holds = [line for line in lines if line.startswith("airflow.octorpa.slot_hold,conn_id=") and line.endswith("|ms")]
    assert len(holds) >= 4  # each call's hold: the refused one, the two started, the lost one
