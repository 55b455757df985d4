"""OpenLineage for trigger tasks (with ``airflow-provider-octorpa[openlineage]`` installed): the
COMPLETE event of a trigger task carries an ``octorpa`` run facet naming the webhook, the robot
and the started run's ``flowProcessNo``. Never the secret, never the parameters' values."""

from __future__ import annotations

from typing import Any

from attrs import define
from openlineage.client.facet_v2 import RunFacet


@define
class OctoRpaRunFacet(RunFacet):
    """The Octopus RPA run that a trigger task started.

    :param webhook: the webhook's id (the URL's part before ``/invoke``), as the console shows it;
        for a webhook without a signing secret (its id is then the credential), ``sha256:`` and a
        short digest of it.
    :param robot: the robot id the call named, or None for the robot chosen on the trigger.
    :param flowProcessNo: the started run, as the console finds it.
    :param flowId: the app's flow id, when the service gave it.
    """

    webhook: str
    robot: str | None
    flowProcessNo: str
    flowId: str | None = None


def operator_lineage(webhook: str, robot: str | None, result: dict[str, Any]) -> Any:
    """The ``OperatorLineage`` of a trigger task whose run started."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    facet = OctoRpaRunFacet(
        webhook=webhook,
        robot=robot,
        flowProcessNo=str(result["flow_process_no"]),
        flowId=result.get("flow_id"),
    )
    return OperatorLineage(run_facets={"octorpa": facet})
