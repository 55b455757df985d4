"""What the operator and the sensor read from rendered templates and from ``default_args``."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from typing import Any

from airflow_octorpa.exceptions import OctoRpaInvalidParamsError


def parse_mapping_text(text: str) -> Any:
    """A rendered template's text read back: as JSON, then as a Python literal (what ``str(dict)``
    gives, when the DAG does not render native objects). Raises ``ValueError`` when it is neither."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("neither JSON nor a Python literal") from None


def rendered_app_params(value: Any) -> dict[str, Any]:
    """Rendered ``app_params`` as a dict; a whole-mapping template's text must read as a mapping."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = parse_mapping_text(value)
        except ValueError:
            raise OctoRpaInvalidParamsError(
                f"app_params rendered to the text {value!r:.120}, which is not a mapping. A template for "
                "the whole app_params must render to a dict, for example "
                "\"{{ ti.xcom_pull(task_ids='extract') }}\" where that task returns a dict."
            ) from None
    if not isinstance(value, Mapping):
        raise OctoRpaInvalidParamsError(
            f"app_params must be a mapping of input variable names to values, got a "
            f"{type(value).__name__}: {value!r:.120}. Pass a dict, or a template that renders to one."
        )
    return dict(value)


def rendered_mapping(value: Any) -> dict[str, Any]:
    """A rendered value as a dict, or ``{}`` when it is none (the caller names what is missing)."""
    if isinstance(value, str):
        try:
            value = parse_mapping_text(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, Mapping) else {}


def default_args_pool(partial_kwargs: Mapping[str, Any]) -> str | None:
    """The pool that ``default_args`` give a mapped task: its own, its task group's, its DAG's."""
    from airflow_octorpa.version_compat import current_dag_and_group

    dag, group = current_dag_and_group(partial_kwargs.get("dag"), partial_kwargs.get("task_group"))
    layers = [
        partial_kwargs.get("default_args"),
        getattr(group, "default_args", None),
        getattr(dag, "default_args", None),
    ]
    return next((layer["pool"] for layer in layers if isinstance(layer, Mapping) and layer.get("pool")), None)
