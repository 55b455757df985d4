"""``octorpa doctor``: every check that needs no run, one line each."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

from airflow_octorpa.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
)


def doctor(args: argparse.Namespace) -> int:
    from airflow_octorpa.exceptions import OctoRpaConfigurationError
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    hook = OctoRpaHook(args.conn_id)
    checks: list[tuple[str, Callable[[], str]]] = [("provider", _check_provider)]
    try:
        config = hook.config
    except OctoRpaConfigurationError as err:
        results = [("connection", False, str(err))] + [(name, *_run_check(check)) for name, check in checks]
        return _report(results)
    checks = [
        ("connection", lambda: f"{args.conn_id!r} parses: {config.url_label} (hold {config.hold:g} s per call)"),
        ("signing", lambda: _check_signing(config.secret)),
        ("webhook URL", lambda: _check_webhook_shape(config.url)),
        ("webhook host", lambda: _check_host(hook)),
        ("pool", lambda: _check_pool(config.pool, config.pool_size)),
        ("pool's connections", lambda: _check_pool_peers(args.conn_id, config)),
        ("logging", _check_logging),
        ("callbacks", _check_callback_route),
        *checks,
    ]
    return _report([(name, *_run_check(check)) for name, check in checks])


class _CheckFailed(Exception):
    pass


class _CheckWarning(Exception):
    """Worth fixing, but nothing fails because of it: printed as WARN, the exit code stays 0."""


def _run_check(check: Callable[[], str]) -> tuple[bool | None, str]:
    try:
        return True, check()
    except _CheckWarning as warning:
        return None, str(warning)
    except _CheckFailed as failed:
        return False, str(failed)


def _report(results: list[tuple[str, bool | None, str]]) -> int:
    for name, ok, text in results:
        print(f"{ {True: 'ok  ', None: 'WARN', False: 'FAIL'}[ok] } {name}: {text}")
    return EXIT_OK if all(ok is not False for _, ok, _ in results) else EXIT_FAILED


def _check_callback_route() -> str:
    """Whether runs can report back (callback=True): the base URL is set, and the route answers there
    with its own JSON. Airflow 3's UI answers any unknown path with its HTML page and 200, so a status
    alone proves nothing."""
    import requests

    from airflow_octorpa.callbacks.token import CALLBACK_PATH, ROUTE_PREFIX, callback_base_url
    from airflow_octorpa.exceptions import OctoRpaConfigurationError

    try:
        base = callback_base_url()
    except OctoRpaConfigurationError:
        raise _CheckWarning(
            "no callback base URL is set: trigger tasks with callback=True will be refused. Set [octorpa] "
            "callback_base_url to the address robots reach Airflow at (only needed for callbacks)."
        ) from None
    probe = f"{base.rstrip('/')}{ROUTE_PREFIX}{CALLBACK_PATH}{'0' * 43}"  # a token no call has
    try:
        answer = requests.get(probe, params={"status": "succeeded"}, timeout=10, allow_redirects=False)
        body = answer.json()
    except (requests.RequestException, ValueError) as err:
        raise _CheckFailed(
            f"the report route at {base} did not answer with its JSON ({type(err).__name__}). Install "
            "airflow-provider-octorpa where the api-server (Airflow 2: the webserver) runs, and check that "
            "the address is right."
        ) from None
    if answer.status_code != 404 or not isinstance(body, dict) or body.get("accepted") is not False:
        raise _CheckFailed(
            f"{base} answered HTTP {answer.status_code} without the report route's JSON. Install "
            "airflow-provider-octorpa where the api-server (Airflow 2: the webserver) runs."
        )
    return f"the report route answers at {base}{ROUTE_PREFIX}{CALLBACK_PATH}<token>"


def _check_logging() -> str:
    from airflow.providers.common.compat.sdk import conf

    level = str(conf.get("logging", "logging_level", fallback="INFO")).upper()
    if level == "DEBUG":
        raise _CheckWarning(
            "[logging] logging_level is DEBUG: Airflow 3's task comms then log the secret being masked "
            "(MaskSecret(value=...)). Set it to INFO where real secrets are used."
        )
    return f"[logging] logging_level is {level}"


def _check_signing(secret: str) -> str:
    if not secret:
        return (
            "no signing secret: the URL alone starts the app (allowed, not advised). Turn on the trigger's "
            "signature check and put its 签名密钥 in the connection's password."
        )
    return "a signing secret is set (not shown)"


def _check_webhook_shape(url: str) -> str:
    from airflow_octorpa.hooks.url_shape import shape_warning

    if warning := shape_warning(url):
        raise _CheckWarning(warning[0].upper() + warning[1:])
    return "the URL has the shape of the console's Webhook地址 (.../webhooks/<webhookId>/invoke)"


def _check_host(hook: Any) -> str:
    ok, message = hook.test_connection()
    if not ok:
        raise _CheckFailed(message)
    return message.split(" Note: ")[0]  # the URL's shape has its own line


def _check_pool(name: str, size: int) -> str:
    fix = f"Fix: airflow pools set {name} {size} 'Octopus RPA webhook calls' --include-deferred"
    try:
        from airflow.utils.session import create_session

        from airflow_octorpa.pool_facts import facts_in, read_pools

        with create_session() as session:
            facts = facts_in(read_pools(session), name)  # what the operator is told, read at the source
    except Exception as err:  # no metadata database here: say so, with the fix
        raise _CheckFailed(
            f"cannot read Airflow's pools ({type(err).__name__}: {err}). Run where Airflow's CLI runs."
        ) from None
    if not facts.exists:
        raise _CheckFailed(f"the pool {name!r} does not exist, so trigger tasks are never scheduled. {fix}")
    slots, include_deferred = facts.slots, facts.counts_deferred
    if slots != size:
        raise _CheckFailed(
            f"the pool {name!r} has {slots} slots but the connection's pool_size is {size}: the hold is computed "
            f"for {size}. Make them equal: {fix}, or set pool_size to {slots}."
        )
    if not include_deferred:
        raise _CheckFailed(f"the pool {name!r} does not count deferred tasks, so deferred holds free their slot. {fix}")
    return f"{name!r} has {slots} slots and counts deferred tasks"


def _check_pool_peers(conn_id: str, config: Any) -> str:
    """Every Octopus RPA connection that names the same pool must compute the same hold from the
    same limits and pool size; otherwise one of them overdraws the shared budget."""
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    differing = []
    peers = 0
    for other in sorted(_octorpa_conn_ids() - {conn_id}):
        try:
            other_config = OctoRpaHook(other).config
        except Exception:  # noqa: BLE001 - a broken connection is reported by its own doctor run
            continue
        if other_config.pool != config.pool:
            continue
        peers += 1
        if (other_config.rate_limits, other_config.pool_size) != (config.rate_limits, config.pool_size):
            differing.append(
                f"{other!r} has rate_limits {other_config.rate_limits!r} and pool_size {other_config.pool_size}"
            )
    if differing:
        raise _CheckFailed(
            f"connections share the pool {config.pool!r} with other limits than {conn_id!r} "
            f"(rate_limits {config.rate_limits!r}, pool_size {config.pool_size}): {'; '.join(differing)}. One pool "
            "is one account's budget: give them the same rate_limits and pool_size, or each account its own pool."
        )
    return f"{peers} other connection(s) share the pool {config.pool!r} with the same limits"


def _octorpa_conn_ids() -> set[str]:
    """The ids of the Octopus RPA connections in the metadata database and in AIRFLOW_CONN_* variables."""
    found: set[str] = set()
    for name, value in os.environ.items():
        if name.startswith("AIRFLOW_CONN_") and ("octorpa" in value.split("://", 1)[0] or '"octorpa"' in value):
            found.add(name[len("AIRFLOW_CONN_") :].lower())
    try:
        from airflow.models.connection import Connection
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            found.update(session.scalars(select(Connection.conn_id).where(Connection.conn_type == "octorpa")))
    except Exception:  # noqa: BLE001 - no metadata database here: the variables are all there is
        pass
    return found


def _check_provider() -> str:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    if "airflow-provider-octorpa" not in manager.providers:
        raise _CheckFailed("Airflow does not list airflow-provider-octorpa. Fix: pip install it where Airflow runs.")
    if "octorpa" not in _registered_hooks(manager):
        raise _CheckFailed("the connection type 'octorpa' is not registered. Fix: reinstall airflow-provider-octorpa.")
    return f"airflow-provider-octorpa {manager.providers['airflow-provider-octorpa'].version} is registered"


def _registered_hooks(manager: Any) -> Any:
    try:  # Airflow 3.2+: hooks are the Task SDK's business
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:
        return manager.hooks
    return ProvidersManagerTaskRuntime().hooks
