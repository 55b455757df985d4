"""``octorpa``: the work users do outside a DAG: trigger a run, check a setup, sign, emulate.

Exit codes: 0 done; 1 a check failed or the call started nothing; 2 bad usage or settings
(nothing sent); 3 refused here to keep the connection's rate limits (nothing sent); 4 the call
may have started a run (its answer was lost). No command prints the secret.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from airflow_octorpa.cli.commands import cleanup as run_cleanup
from airflow_octorpa.cli.commands import pool as run_pool
from airflow_octorpa.cli.commands import sign_command as run_sign
from airflow_octorpa.cli.common import EXIT_USAGE, UsageError, fail
from airflow_octorpa.cli.doctor import doctor as run_doctor
from airflow_octorpa.cli.inbox import add_parser as add_inbox_parser
from airflow_octorpa.cli.trigger import trigger as run_trigger


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
    except UsageError as err:
        return fail(EXIT_USAGE, str(err))


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
    trigger.set_defaults(run=run_trigger)

    doctor = commands.add_parser(
        "doctor",
        help="check a setup without starting a run",
        description="Check everything that can be checked without starting a run: the connection, the "
        "webhook's host, the pool, the provider's registration. One line per check; exit 1 on a failure.",
    )
    _add_conn_id(doctor)
    doctor.set_defaults(run=run_doctor)

    sign = commands.add_parser(
        "sign",
        help="print the signature for a timestamp",
        description="Print the vendor's signature for a timestamp, to compare with another client's. The "
        "secret is read from standard input (one line), or from --conn-id.",
    )
    sign.add_argument("--timestamp", help="Unix seconds (default: now, printed to standard error)")
    sign.add_argument("--conn-id", help="take the secret from this connection instead of standard input")
    sign.set_defaults(run=run_sign)

    # Listed for --help only: main() hands "octorpa emulator ..." to the emulator's own parser.
    commands.add_parser("emulator", help="run the local webhook emulator (octorpa emulator --help)")

    pool = commands.add_parser(
        "pool",
        help="print the pool as JSON for 'airflow pools import'",
        description="Print the pool a connection's calls run in, sized from its pool_size, as the JSON "
        "that 'airflow pools import' reads.",
    )
    pool.add_argument("--conn-id", help="size and name the pool from this connection (default: 'octorpa', 5)")
    pool.set_defaults(run=run_pool)

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
    cleanup.set_defaults(run=run_cleanup)
    add_inbox_parser(commands)
    return parser


def _add_conn_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conn-id", default="octorpa_default", help="the Airflow connection (default octorpa_default)")
