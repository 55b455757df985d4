"""Registration as an Airflow provider: entry point, metadata schema, CLI listing, connection form."""

from __future__ import annotations

import json
from importlib.metadata import entry_points
from pathlib import Path

import airflow
import pytest

from airflow_octorpa.get_provider_info import get_provider_info
from airflow_octorpa.hooks.octorpa import OctoRpaHook
from tests.support.airflow_helpers import AIRFLOW_V_3
from tests.support.cli_output import json_output
from tests.support.settings import airflow_cli


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

    try:  # Airflow 3.2+: tasks read hooks through the Task SDK's own manager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as HookManager
    except ImportError:
        HookManager = ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-octorpa" in manager.providers
    hook_info = HookManager().hooks["octorpa"]
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
    assert any(p["package_name"] == "airflow-provider-octorpa" for p in json_output(listed.stdout))
    hooks = airflow_cli("providers", "hooks", "--output", "json")
    assert hooks.returncode == 0, hooks.stderr
    assert any(h["connection_type"] == "octorpa" for h in json_output(hooks.stdout))


def test_connection_of_the_type_builds_the_hook(monkeypatch):
    from airflow.providers.common.compat.sdk import Connection

    conn = Connection(conn_id="octorpa_x", conn_type="octorpa", host="https://h/api/v1/bots/webhooks/1/invoke")
    hook = conn.get_hook()
    assert isinstance(hook, OctoRpaHook) and hook.octorpa_conn_id == "octorpa_x"


def test_the_hooks_form_methods_give_the_same_form_as_the_metadata():
    """Airflow 2.11 and 3.0 read the form from the hook, later versions from the metadata."""
    (connection_type,) = get_provider_info()["connection-types"]
    fields = connection_type["conn-fields"]
    widgets = OctoRpaHook.get_connection_form_widgets()
    assert set(widgets) == set(fields)
    for name, widget in widgets.items():
        assert widget.args[0] == fields[name]["label"]  # a WTForms field: (label,) and its keywords
        assert widget.kwargs["description"] == fields[name]["description"]
    assert widgets["pool_size"].field_class.__name__ == "IntegerField"
    behaviour = OctoRpaHook.get_ui_field_behaviour()
    assert {key.replace("_", "-"): value for key, value in behaviour.items()} == connection_type["ui-field-behaviour"]
    assert set(behaviour["placeholders"]) == {"host", "password", *fields}


def test_the_listener_that_removes_ended_runs_records_is_a_plugin():
    from airflow import plugins_manager

    assert "octorpa" in {plugin["name"] for plugin in plugins_manager.get_plugin_info()}


@pytest.mark.skipif(not AIRFLOW_V_3, reason="Airflow 2 has no DAG bundles")
def test_with_examples_loaded_airflow_finds_the_provider_module_it_looks_for():
    """Airflow 3.3 imports each provider's distribution name to look for example DAGs; with the
    default load_examples=True a missing module logged an ERROR on every parse and dags test."""
    import os
    import subprocess
    import sys

    code = (
        "from airflow.dag_processing.bundles.manager import DagBundlesManager; "
        "m = DagBundlesManager(); m.parse_config(); print(sorted(m._bundle_config))"
    )
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "True"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(env["AIRFLOW_HOME"]),
    )  # not the checkout: the module must come from the installed package
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Could not load provider module" not in output and "ModuleNotFoundError" not in output, output[-3000:]
    assert "airflow-provider-octorpa-example-dags" not in done.stdout  # no examples are installed as Airflow's
