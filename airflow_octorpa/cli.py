"""``octorpa``: the work users do outside a DAG: trigger a run, check a setup, sign, emulate.

Exit codes: 0 done; 1 a check failed or the call started nothing; 2 bad usage or settings
(nothing sent); 3 refused here to keep the connection's rate limits (nothing sent); 4 the call
may have started a run (its answer was lost). No command prints the secret.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RATE_LIMITED, EXIT_UNKNOWN_OUTCOME = 0, 1, 2, 3, 4


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Read connections as Airflow's own CLI does (`airflow connections get`): outside a task the
    # Task SDK of Airflow 3 consults only environment variables and secrets backends, unless the
    # process says it is a server; then the metadata database is consulted too.
    os.environ.setdefault("_AIRFLOW_PROCESS_CONTEXT", "server")
    if argv[:1] == ["emulator"]:  # its own options, --help included, belong to the emulator
        from airflow_octorpa.emulator.__main__ import main as emulator_main

        return int(emulator_main(argv[1:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    _airflow_logs_to_stderr()
    try:
        return int(args.run(args))
    except _UsageError as err:
        return _fail(EXIT_USAGE, str(err))


def _airflow_logs_to_stderr() -> None:
    """Airflow 2 logs to standard output, where this command prints its answers (JSON, a signature)."""
    import logging

    import airflow  # noqa: F401  (sets up Airflow's logging)

    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if getattr(handler, "_use_stderr", True) is False:  # Airflow 2's RedirectStdHandler("stdout")
                handler._use_stderr = True
            elif isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
                handler.setStream(sys.stderr)


class _UsageError(Exception):
    """Bad usage or settings: nothing was sent (exit 2)."""


def _connection_config(conn_id: str) -> Any:
    """The connection's checked settings, or a usage error naming what is wrong."""
    from airflow_octorpa.exceptions import OctoRpaConfigurationError
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    try:
        return OctoRpaHook(conn_id).config
    except OctoRpaConfigurationError as err:
        raise _UsageError(str(err)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="octorpa",
        description="八爪鱼RPA (Octopus RPA) webhook tools for Airflow users.",
        epilog="Exit codes: 0 done, 1 failed (nothing started), 2 bad usage or settings, "
        "3 refused to keep the rate limits, 4 the app may have started.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    trigger = commands.add_parser(
        "trigger",
        help="start a run through the connection's webhook",
        description="Start the connection's RPA app once, with the same checks and outcome rules as "
        "the operator, and print the run's flowProcessNo. Refuses to call faster than the "
        "connection's rate_limits allow (counting this machine's earlier octorpa trigger calls).",
    )
    _add_conn_id(trigger)
    trigger.add_argument("--bot-id", help="the robot to run on (default: the connection's)")
    trigger.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=TEXT|NAME:=JSON",
        help="one input variable: 变量1=AAA sends a string, 变量3:=10 sends JSON (a number here); repeatable",
    )
    trigger.add_argument("--params-json", help="all input variables as a JSON object, or @FILE to read one")
    trigger.set_defaults(run=_trigger)

    doctor = commands.add_parser(
        "doctor",
        help="check a setup without starting a run",
        description="Check everything that can be checked without starting a run: the connection, the "
        "webhook's host, the pool, the provider's registration. One line per check; exit 1 on a failure.",
    )
    _add_conn_id(doctor)
    doctor.set_defaults(run=_doctor)

    sign = commands.add_parser(
        "sign",
        help="print the signature for a timestamp",
        description="Print the vendor's signature for a timestamp, to compare with another client's. The "
        "secret is read from standard input (one line), or from --conn-id.",
    )
    sign.add_argument("--timestamp", help="Unix seconds (default: now, printed to standard error)")
    sign.add_argument("--conn-id", help="take the secret from this connection instead of standard input")
    sign.set_defaults(run=_sign)

    # Listed for --help only: main() hands "octorpa emulator ..." to the emulator's own parser.
    commands.add_parser("emulator", help="run the local webhook emulator (octorpa emulator --help)")

    pool = commands.add_parser(
        "pool",
        help="print the pool as JSON for 'airflow pools import'",
        description="Print the pool a connection's calls run in, sized from its pool_size, as the JSON "
        "that 'airflow pools import' reads.",
    )
    pool.add_argument("--conn-id", help="size and name the pool from this connection (default: 'octorpa', 5)")
    pool.set_defaults(run=_pool)

    cleanup = commands.add_parser(
        "cleanup",
        help="remove the provider's records (Variables) whose DAG run is gone or ended long ago",
        description="Remove the call records and run reports (Airflow Variables) that no DAG run's end "
        "removed: those whose DAG run no longer exists, or ended at least --older-than seconds ago. "
        "Records of running DAG runs are never touched. Needs the metadata database, as 'airflow db clean'.",
    )
    cleanup.add_argument(
        "--older-than",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long after its DAG run ended a record is kept (default: [octorpa] record_retention, 86400)",
    )
    cleanup.set_defaults(run=_cleanup)
    return parser


def _add_conn_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conn-id", default="octorpa_default", help="the Airflow connection (default octorpa_default)")


# -- trigger -------------------------------------------------------------------------------------


def _trigger(args: argparse.Namespace) -> int:
    from airflow_octorpa.exceptions import CallOutcome, OctoRpaConfigurationError, OctoRpaError
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    try:
        params = _params(args.param, args.params_json)
        hook = OctoRpaHook(args.conn_id)
        call = hook.prepare(params, bot_id=args.bot_id)
    except (OctoRpaConfigurationError, ValueError) as err:
        return _fail(EXIT_USAGE, f"Nothing sent: {err}")
    try:
        with CallLog.for_connection(args.conn_id).locked() as times:
            if (wait := wait_before_next(times, hook.config.rate_limits)) > 0:
                return _fail(
                    EXIT_RATE_LIMITED,
                    f"Nothing sent: another call now would exceed the connection's rate limits "
                    f"({hook.config.rate_limits}); try again in {wait:.1f} s.",
                )
            times.append(time.time())  # before sending: a call that may have started counts too
    except CallLogError as err:
        return _fail(EXIT_USAGE, f"Nothing sent: {err}")
    try:
        result = hook.send(call)
    except OctoRpaError as err:
        code = EXIT_UNKNOWN_OUTCOME if err.outcome is CallOutcome.UNKNOWN else EXIT_FAILED
        return _fail(code, str(err))
    print(json.dumps(result.to_dict(), ensure_ascii=False))
    return EXIT_OK


def _params(pairs: Sequence[str], params_json: str | None) -> dict[str, Any]:
    """The input variables from ``-p`` and ``--params-json``; ``ValueError`` names what is wrong."""
    params: dict[str, Any] = {}
    if params_json:
        loaded = _json(_params_json_text(params_json), "--params-json")
        if not isinstance(loaded, dict):
            raise ValueError(f"--params-json must be a JSON object, got a JSON {type(loaded).__name__}")
        params.update(loaded)
    for pair in pairs:
        name, typed, value = _split_param(pair)
        params[name] = _json(value, f"-p {pair!r:.80}") if typed else value
    return params


def _params_json_text(params_json: str) -> str:
    if not params_json.startswith("@"):
        return params_json
    path = Path(params_json[1:])
    try:
        if path.stat().st_size > _MAX_PARAMS_FILE_BYTES:
            raise ValueError(f"--params-json {params_json!r}: the file is over {_MAX_PARAMS_FILE_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        raise ValueError(
            f"--params-json {params_json!r}: cannot read the file ({reason}); give a readable JSON file"
        ) from None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: the JSON nests too deeply") from None
    except ValueError as err:
        raise ValueError(f"{where}: not valid JSON ({err})") from None


_MAX_PARAMS_FILE_BYTES = 1024 * 1024


def _split_param(pair: str) -> tuple[str, bool, str]:
    """``NAME:=JSON`` or ``NAME=TEXT``, whichever separator comes first."""
    typed_at, text_at = pair.find(":="), pair.find("=")
    if typed_at >= 0 and text_at == typed_at + 1:
        name, typed, value = pair[:typed_at], True, pair[typed_at + 2 :]
    elif text_at >= 0:
        name, typed, value = pair[:text_at], False, pair[text_at + 1 :]
    else:
        raise ValueError(f"-p {pair!r}: write NAME=TEXT for a string or NAME:=JSON for a number, list or object")
    if not name.strip():
        raise ValueError(f"-p {pair!r}: the input variable's NAME before '=' or ':=' is empty")
    return name, typed, value


class CallLogError(Exception):
    """The call log cannot be read or written safely: nothing may be sent."""


def wait_before_next(times: Sequence[float], rate_limits: str, now: float | None = None) -> float:
    """Seconds until one more call fits every moving window of ``rate_limits`` after ``times``."""
    from limits import parse_many

    now = time.time() if now is None else now
    ordered = sorted(times)
    wait = 0.0
    for item in parse_many(rate_limits):
        window = [t for t in ordered if t > now - item.get_expiry()]
        if len(window) >= item.amount:
            wait = max(wait, window[len(window) - item.amount] + item.get_expiry() - now)
    return wait


class CallLog:
    """The times of this user's recent ``octorpa trigger`` calls for one connection, so that separate
    invocations keep the connection's rate limits together.

    Kept in ``$XDG_STATE_HOME/octorpa`` (default ``~/.local/state/octorpa``): a folder of mode 0700 and
    files of mode 0600, opened without following symbolic links, read and rewritten (atomically, by
    rename) under an exclusive lock. A log that cannot be read is not taken for "no calls": the
    command refuses to send until it is fixed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def for_connection(cls, conn_id: str, state_home: Path | None = None) -> CallLog:
        import hashlib
        import re

        base = state_home or Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        # A connection id may hold any character: keep a readable part and tell ids apart by a digest.
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", conn_id)[:64].lstrip(".")
        digest = hashlib.sha256(conn_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return cls(base / "octorpa" / f"calls-{readable}-{digest}.json")

    @contextmanager
    def locked(self) -> Iterator[list[float]]:
        """The recent call times, under the log's lock; what the block leaves in the list is written."""
        import fcntl

        folder = self._folder()
        try:
            lock = os.open(folder / (self.path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        except OSError as err:
            raise CallLogError(self._problem("cannot open its lock", err)) from None
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            times = self._read()
            yield times
            self._write([t for t in times if t > time.time() - 3600])  # no limit spans more than an hour
        finally:
            os.close(lock)

    def times(self) -> list[float]:
        with self.locked() as times:
            return list(times)

    def wait_before_next(self, rate_limits: str, now: float | None = None) -> float:
        return wait_before_next(self.times(), rate_limits, now)

    def record(self, now: float | None = None) -> None:
        with self.locked() as times:
            times.append(time.time() if now is None else now)

    def _folder(self) -> Path:
        import stat

        folder = self.path.parent
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            info = os.lstat(folder)
        except OSError as err:
            raise CallLogError(self._problem("cannot create its folder", err)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise CallLogError(f"the call log's folder {str(folder)!r} is not a folder (a link or a file); remove it")
        if info.st_uid != os.getuid():
            raise CallLogError(
                f"the call log's folder {str(folder)!r} belongs to another user; set XDG_STATE_HOME to a folder "
                "of your own"
            )
        if info.st_mode & 0o077:  # made by an earlier version with the default umask
            try:
                os.chmod(folder, 0o700)
            except OSError as err:
                raise CallLogError(self._problem("cannot make its folder private", err)) from None
        return folder

    def _read(self) -> list[float]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise CallLogError(self._problem("cannot be read", err)) from None
        with os.fdopen(fd, "rb") as file:
            raw = file.read(1024 * 1024)
        try:
            times = [float(t) for t in json.loads(raw)]
        except (ValueError, TypeError, RecursionError):
            times = []
        else:
            if all(math.isfinite(t) for t in times):
                return times
        raise CallLogError(
            f"the call log {str(self.path)!r} is corrupt, so the recent calls (and so the rate limits) are "
            "unknown. Delete it once an hour has passed since the last octorpa trigger call."
        )

    def _write(self, times: list[float]) -> None:
        temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(json.dumps(times))
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)  # rename replaces a planted link itself, never its target
        except OSError as err:
            with suppress(OSError):
                temporary.unlink()
            raise CallLogError(self._problem("cannot be written", err)) from None

    def _problem(self, what: str, err: OSError) -> str:
        return (
            f"the call log {str(self.path)!r} {what} ({err.strerror or type(err).__name__}); fix its folder's "
            "permissions or set XDG_STATE_HOME to a folder of your own"
        )


# -- doctor --------------------------------------------------------------------------------------


def _doctor(args: argparse.Namespace) -> int:
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
        from airflow.models.pool import Pool
        from airflow.utils.session import create_session

        with create_session() as session:
            pool = session.query(Pool).filter(Pool.pool == name).one_or_none()
            found = None if pool is None else (pool.slots, bool(pool.include_deferred))
    except Exception as err:  # no metadata database here: say so, with the fix
        raise _CheckFailed(
            f"cannot read Airflow's pools ({type(err).__name__}: {err}). Run where Airflow's CLI runs."
        ) from None
    if found is None:
        raise _CheckFailed(f"the pool {name!r} does not exist, so trigger tasks are never scheduled. {fix}")
    slots, include_deferred = found
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


# -- sign, emulator, pool ------------------------------------------------------------------------


def _sign(args: argparse.Namespace) -> int:
    from airflow_octorpa.hooks.octorpa import sign

    timestamp = args.timestamp
    if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return _fail(EXIT_USAGE, f"--timestamp {timestamp!r:.40}: give Unix seconds, such as 1700000000.")
    if args.conn_id:
        secret = _connection_config(args.conn_id).secret
    elif sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("Signing secret (not echoed): ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        return _fail(
            EXIT_USAGE, "No secret: give it on standard input or with --conn-id. Without one, 'sign' is sent empty."
        )
    if timestamp is None:
        timestamp = str(int(time.time()))
        print(f"timestamp {timestamp}", file=sys.stderr)
    print(sign(timestamp, secret))
    return EXIT_OK


def _pool(args: argparse.Namespace) -> int:
    from airflow_octorpa.rate_limit import DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS, pool_file

    name, size, limits = DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS
    if args.conn_id:
        config = _connection_config(args.conn_id)
        name, size, limits = config.pool, config.pool_size, config.rate_limits
    print(json.dumps(pool_file(name, size, limits), ensure_ascii=False, indent=2))
    return EXIT_OK


def _cleanup(args: argparse.Namespace) -> int:
    from airflow.utils.session import create_session

    from airflow_octorpa.run_records import sweep

    if args.older_than is not None and args.older_than < 0:
        raise _UsageError("--older-than takes a number of seconds, 0 or more.")
    with create_session() as session:
        result = sweep(session, args.older_than)
    print(f"octorpa cleanup: {result}.")
    return EXIT_OK


def _fail(code: int, message: str) -> int:
    print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
