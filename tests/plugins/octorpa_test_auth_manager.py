"""An auth manager for the real-components tests (Airflow 3): the simple auth manager, whose user
``outsider`` may read no DAG at all, as a FAB or Keycloak role limited to other DAGs would. The run's
page must ask the auth manager, not assume that any login reads any DAG."""

from __future__ import annotations

from typing import Any

try:
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
except ImportError:  # Airflow 2: no such auth manager, and this module is not configured there
    SimpleAuthManager = object  # type: ignore[assignment,misc]

OUTSIDER = "outsider"


class OneUserLockedOutAuthManager(SimpleAuthManager):  # type: ignore[misc,valid-type]
    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if user.get_name() == OUTSIDER:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)
