"""Operator that starts an 八爪鱼RPA (Octopus RPA) app through its webhook trigger."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from airflow_octorpa.exceptions import OctoRpaInvalidParamsError

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import Context

    from airflow_octorpa.hooks.octorpa import OctoRpaHook

# Every trigger task shares this pool, so the account's rate limit is shared too.
DEFAULT_POOL = "octorpa"


class OctoRpaTriggerOperator(BaseOperator):
    """
    Start an 八爪鱼RPA (Octopus RPA) app on a robot, with its input variables set from ``app_params``.

    The task's return value (XCom) is ``{"flow_process_no", "flow_id", "enterprise_id"}``:
    ``flow_process_no`` identifies the started run in the Octopus RPA console.

    :param app_params: The app's input variables by name (templated). Values keep their JSON type:
        ``10`` is sent as a number. Values may be ``XComArg``s (``task.output["key"]``), which
        resolve to native values, or Jinja strings. A single template string for the whole
        mapping must render to a mapping (a dict, or its JSON or Python text).
    :param bot_id: The robot id (机器人ID) to run on (templated); default: the connection's
        ``bot_id``, else the robot chosen on the trigger.
    :param octorpa_conn_id: The Airflow connection of type ``octorpa``.
    :param pool: Default ``"octorpa"``: keep every trigger task in that pool (see the README).
    """

    template_fields: Sequence[str] = ("app_params", "bot_id")
    template_fields_renderers = {"app_params": "json"}
    ui_color = "#ffb74d"

    def __init__(
        self,
        *,
        app_params: Mapping[str, Any] | str | None = None,
        bot_id: str | None = None,
        octorpa_conn_id: str = "octorpa_default",
        pool: str | None = DEFAULT_POOL,
        **kwargs: Any,
    ) -> None:
        super().__init__(pool=pool, **kwargs)
        self.app_params = app_params
        self.bot_id = bot_id
        self.octorpa_conn_id = octorpa_conn_id

    @classmethod
    def partial(cls, **kwargs: Any):  # type: ignore[override]
        """Map the operator (``.partial(...).expand(app_params=...)``), in the ``octorpa`` pool by default."""
        # BaseOperator.partial only fills the defaults it knows, so the pool default is set here.
        kwargs.setdefault("pool", DEFAULT_POOL)
        return super().partial(**kwargs)

    @cached_property
    def hook(self) -> OctoRpaHook:
        """The hook for ``octorpa_conn_id`` (cached for the task's lifetime)."""
        from airflow_octorpa.hooks.octorpa import OctoRpaHook

        return OctoRpaHook(octorpa_conn_id=self.octorpa_conn_id)

    def execute(self, context: Context) -> dict[str, str | None]:
        app_params = rendered_app_params(self.app_params)
        result = self.hook.trigger(app_params, bot_id=self.bot_id or None)
        self.log.info(
            "Started Octopus RPA run flowProcessNo=%s (flowId=%s) with %d input variable(s).",
            result.flow_process_no,
            result.flow_id,
            len(app_params),
        )
        return result.to_dict()


def rendered_app_params(value: Any) -> dict[str, Any]:
    """Return rendered ``app_params`` as a dict.

    A whole-mapping template renders to text unless the DAG renders native objects, so text is
    read back as JSON, then as a Python literal (what ``str(dict)`` gives); it must be a mapping.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = _parse_mapping_text(value)
    if not isinstance(value, Mapping):
        raise OctoRpaInvalidParamsError(
            f"app_params must be a mapping of input variable names to values, got a "
            f"{type(value).__name__}: {value!r:.120}. Pass a dict, or a template that renders to one."
        )
    return dict(value)


def _parse_mapping_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise OctoRpaInvalidParamsError(
            f"app_params rendered to the text {text!r:.120}, which is not a mapping. A template for "
            "the whole app_params must render to a dict, for example "
            "\"{{ ti.xcom_pull(task_ids='extract') }}\" where that task returns a dict."
        ) from None
