"""Airflow's REST API as a user's script calls it, for a test cluster's components."""

from __future__ import annotations

import base64
import json
from typing import Any

import requests

from tests.support.airflow_helpers import AIRFLOW_V_3

API_PASSWORD = "octorpa-test-admin"  # Airflow 2's REST API users, in the components' private home


def api_headers(cluster: Any, user: str = "admin") -> dict[str, str]:
    """A login to Airflow's REST API: 3.x's simple auth manager's generated password, 2.11's admin user."""
    if not AIRFLOW_V_3:
        return {"Authorization": "Basic " + base64.b64encode(f"admin:{API_PASSWORD}".encode()).decode()}
    users = json.loads((cluster.home / "simple_auth_manager_passwords.json.generated").read_text())
    login = requests.post(
        f"http://127.0.0.1:{cluster.port}/auth/token",
        json={"username": user, "password": users[user]},
        timeout=30,
    )
    assert login.status_code in (200, 201), login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def mark(cluster: Any, dag_id: str, run_id: str, task_id: str, state: str, map_index: int = -1) -> None:
    """Mark a task instance as a user does, through the REST API (the UI's own call on 3.x)."""
    version = "v2" if AIRFLOW_V_3 else "v1"
    url = f"http://127.0.0.1:{cluster.port}/api/{version}/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
    url += f"/{map_index}" if map_index >= 0 else ""
    body = {"new_state": state} if AIRFLOW_V_3 else {"new_state": state, "dry_run": False}
    marked = requests.patch(url, json=body, headers=api_headers(cluster), timeout=60)
    assert marked.status_code == 200, marked.text
