"""A listener plugin for the scheduler tests: records every task success it is told of, as a
line of JSON in ``$AIRFLOW_HOME/listener-events.jsonl``, to show that deferred and worker mode end
through the same success path (OpenLineage and other listeners see both)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin


class _Recorder:
    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance) -> None:
        line = {"dag_id": task_instance.dag_id, "task_id": task_instance.task_id, "map_index": task_instance.map_index}
        with (Path(os.environ["AIRFLOW_HOME"]) / "listener-events.jsonl").open("a") as events:
            events.write(json.dumps(line) + "\n")


class OctoRpaTestListenerPlugin(AirflowPlugin):
    name = "octorpa_test_listener"
    listeners = [_Recorder()]
