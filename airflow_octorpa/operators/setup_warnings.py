"""Warnings about a setup that works here but not as the user means it; nothing is refused."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_octorpa.hooks.octorpa import OctoRpaWebhookConfig


def warn_about_setup(log: Any, conn_id: str, task_pool: str, config: OctoRpaWebhookConfig) -> None:
    """The task outside the account's pool, an unsigned webhook, a URL unlike a webhook's."""
    from airflow_octorpa.hooks.url_shape import shape_warning

    if task_pool != config.pool:
        log.warning(
            "This task runs in the pool %r, not %r: its webhook calls are not counted against the "
            "account's shared rate-limit budget, so calls from other tasks may be refused. Set "
            "pool=%r (or the connection's 'pool' extra).",
            task_pool,
            config.pool,
            config.pool,
        )
    if not config.secret:
        log.warning(
            "Connection %r has no signing secret, so the webhook URL alone can start this app and it is "
            "shown unmasked in the connection's Host field. Turn on the trigger's signature check in the "
            "Octopus RPA console and put its 签名密钥 in the connection's password.",
            conn_id,
        )
    if warning := shape_warning(config.url):
        log.warning("Connection %r: %s", conn_id, warning)


def warn_if_pool_missing(log: Any, pool: str, exists: bool | None) -> None:
    if exists is False:
        log.warning(
            "The pool %r does not exist. Under a scheduler this task waits in 'scheduled' for ever (only the "
            "scheduler's log says why); airflow dags test ignores pools, so it runs here. Create it: octorpa "
            "pool > octorpa-pool.json && airflow pools import octorpa-pool.json (or name an existing pool).",
            pool,
        )
