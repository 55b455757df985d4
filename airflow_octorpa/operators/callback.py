"""The operator's side of a callback: a URL for the run's report, registered before the call is sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import conf

from airflow_octorpa.call_record import map_index_of
from airflow_octorpa.exceptions import OctoRpaCallRecordError, OctoRpaConfigurationError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_octorpa.callbacks.token import CallbackToken


def new_callback(app_params: dict[str, Any], callback_param: str, context: Context, log: Any) -> CallbackToken:
    """A token and URL for this call's report; refuses (nothing sent) what could not work."""
    from airflow.providers.common.compat.sdk import mask_secret

    from airflow_octorpa.callbacks import token
    from airflow_octorpa.checks import is_loopback_url

    if conf.getboolean("core", "multi_team", fallback=False):
        # A team's task writes team Variables, which the triggerer's in-process API (no team) cannot read.
        raise OctoRpaConfigurationError(
            "callback=True is not supported with Airflow's multi-team mode ([core] multi_team) yet: a deferred "
            "wait could not read the run's report. Use callback=False, or run this DAG without multi-team. "
            "Nothing was sent."
        )
    if callback_param in app_params:
        raise OctoRpaConfigurationError(
            f"app_params already has {callback_param!r}, the input variable that receives the callback "
            "URL. Rename that parameter, or set callback_param to another name. Nothing was sent."
        )
    base = token.callback_base_url()
    if is_loopback_url(base):
        log.warning(
            "The callback base URL %s is a loopback address: a robot on another machine cannot reach it. Set "
            "[octorpa] callback_base_url to the address robots reach Airflow at.",
            base,
        )
    ti = context.get("ti")
    if ti is None:
        raise OctoRpaConfigurationError(
            "callback=True needs an Airflow task instance to keep the run's report for: run the operator "
            "in a DAG (dag.test(), airflow dags test or a scheduler). Nothing was sent."
        )
    callback = token.new_callback(base, ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))
    mask_secret(callback.url)
    return callback


def register_report(callback: CallbackToken, context: Context) -> str:
    """Record that this call awaits a report, before it is sent: an app can report at once."""
    from airflow_octorpa.callbacks.reports import register

    ti = context.get("ti")
    try:
        register(callback.key, ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))  # type: ignore[union-attr]
    except Exception as err:
        raise OctoRpaCallRecordError(
            f"Could not register the call's callback before sending it ({type(err).__name__}), so it was not "
            "sent. Check that Airflow's metadata database (and on Airflow 3 the API server) is reachable; the "
            "task's retries send it once it is."
        ) from err
    return str(callback.key)
