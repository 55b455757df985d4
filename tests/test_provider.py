"""Registration as an Airflow provider: entry point, metadata schema, CLI listing, connection form."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import pytest
from conftest import airflow_cli

from airflow_octorpa.get_provider_info import get_provider_info
from airflow_octorpa.hooks.octorpa import OctoRpaHook


def test_entry_point_points_at_get_provider_info():
    (entry,) = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_octorpa")]
    assert entry.load() is get_provider_info


def test_provider_info_is_valid_against_airflows_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    (conn_type,) = info["connection-types"]
    assert conn_type["hook-class-name"] == f"{OctoRpaHook.__module__}.{OctoRpaHook.__qualname__}"
    assert conn_type["connection-type"] == OctoRpaHook.conn_type


def test_hook_identity():
    assert (OctoRpaHook.conn_type, OctoRpaHook.conn_name_attr, OctoRpaHook.default_conn_name) == (
        "octorpa",
        "octorpa_conn_id",
        "octorpa_default",
    )
    assert "八爪鱼RPA" in OctoRpaHook.hook_name and "Octopus RPA" in OctoRpaHook.hook_name


def test_providers_manager_knows_the_hook_and_the_connection_form():
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()
    assert "airflow-provider-octorpa" in manager.providers
    hook_info = ProvidersManagerTaskRuntime().hooks["octorpa"]
    assert hook_info.hook_class_name == "airflow_octorpa.hooks.octorpa.OctoRpaHook"
    assert hook_info.connection_id_attribute_name == "octorpa_conn_id"
    behaviour = manager.field_behaviours["octorpa"]
    assert {"schema", "login", "port", "extra"} <= set(behaviour["hidden_fields"])
    assert "Webhook URL" in behaviour["relabeling"]["host"]
    assert "签名密钥" in behaviour["relabeling"]["password"]
    widgets = manager.connection_form_widgets
    assert {f"extra__octorpa__{field}" for field in ("bot_id", "timeout", "rate_limits", "pool", "pool_size")} <= set(
        widgets
    )


def test_the_trigger_is_listed_and_importable():
    import importlib

    from airflow.providers_manager import ProvidersManager

    (triggers,) = get_provider_info()["triggers"]
    for module in triggers["python-modules"]:
        importlib.import_module(module)
    assert any(t.package_name == "airflow-provider-octorpa" for t in ProvidersManager().trigger)


def test_airflow_cli_lists_the_provider_and_connection_type(airflow_db):
    listed = airflow_cli("providers", "list", "--output", "json")
    assert listed.returncode == 0, listed.stderr
    assert any(p["package_name"] == "airflow-provider-octorpa" for p in json.loads(listed.stdout))
    hooks = airflow_cli("providers", "hooks", "--output", "json")
    assert hooks.returncode == 0, hooks.stderr
    assert any(h["connection_type"] == "octorpa" for h in json.loads(hooks.stdout))


def test_connection_of_the_type_builds_the_hook(monkeypatch):
    from airflow.sdk import Connection

    conn = Connection(conn_id="octorpa_x", conn_type="octorpa", host="https://h/api/v1/bots/webhooks/1/invoke")
    hook = conn.get_hook()
    assert isinstance(hook, OctoRpaHook) and hook.octorpa_conn_id == "octorpa_x"
