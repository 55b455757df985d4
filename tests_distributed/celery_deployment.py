"""Airflow 3 as teams deploy it beyond one machine: the CeleryExecutor with Redis as its broker,
PostgreSQL as the metadata database, two schedulers, two Celery workers (each with its own
hostname), a triggerer, a dag-processor and an api-server. Everything on free loopback ports,
everything stopped on exit. Used by ``make test-distributed`` and ``make bench``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support.airflow_cluster import NO_LOG_SERVER, AirflowCluster, Component, component
from tests.support.services import PostgresServer, RedisServer, ensure_installed

HERE = Path(__file__).resolve().parent

REQUIRED_PROGRAMS = {"initdb": "postgresql", "postgres": "postgresql", "redis-server": "redis-server"}
WORKERS = ("worker-1", "worker-2")
SCHEDULERS = ("scheduler-1", "scheduler-2")


def worker(name: str) -> Component:
    return Component(
        name,
        ("celery", "worker", "--concurrency", "8", "--celery-hostname", f"{name}@octorpa", *NO_LOG_SERVER),
        {"OCTORPA_WORKER_NAME": name},
    )


def components() -> list[Component]:
    return [
        component("api-server"),
        *(Component(name, ("scheduler", *NO_LOG_SERVER)) for name in SCHEDULERS),
        component("dag-processor"),
        component("triggerer"),
        *(worker(name) for name in WORKERS),
    ]


@contextlib.contextmanager
def celery_deployment(
    home: Path, dags: Path, connections: dict[str, dict[str, Any]], settings: dict[str, str] | None = None
) -> Iterator[AirflowCluster]:
    """Start PostgreSQL, Redis and the Airflow components; yield the running cluster.

    ``settings``: more ``AIRFLOW__*`` variables, over this deployment's own."""
    if reason := ensure_installed(REQUIRED_PROGRAMS):
        raise RuntimeError(f"cannot start the distributed deployment: {reason}")
    with PostgresServer() as postgres, RedisServer() as redis:
        cluster = AirflowCluster(
            home / "airflow",
            dags,
            parallelism=32,
            plugins_folder=HERE.parent / "tests" / "plugins",
            sql_alchemy_conn=postgres.url,
            executor="CeleryExecutor",
            components=components(),
            extra_env={
                "PYTHONPATH": str(HERE),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "worker_hostname.get",
                "AIRFLOW__CELERY__BROKER_URL": redis.url,
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + postgres.url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
                "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "60",
                # Failures are noticed in seconds rather than minutes, so the suite can wait for them.
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "10",
                "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "10",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "60",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                **(settings or {}),
            },
        )
        cluster.prepare(connections)
        with cluster:
            cluster.start()
            yield cluster
