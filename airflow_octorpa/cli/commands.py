"""``octorpa sign``, ``octorpa pool`` and ``octorpa cleanup``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from airflow_octorpa.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    connection_config,
    fail,
)


def sign_command(args: argparse.Namespace) -> int:
    from airflow_octorpa.hooks.octorpa import sign

    timestamp = args.timestamp
    if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return fail(EXIT_USAGE, f"--timestamp {timestamp!r:.40}: give Unix seconds, such as 1700000000.")
    if args.conn_id:
        secret = connection_config(args.conn_id).secret
    elif sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("Signing secret (not echoed): ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        return fail(
            EXIT_USAGE, "No secret: give it on standard input or with --conn-id. Without one, 'sign' is sent empty."
        )
    if timestamp is None:
        timestamp = str(int(time.time()))
        print(f"timestamp {timestamp}", file=sys.stderr)
    print(sign(timestamp, secret))
    return EXIT_OK


def pool(args: argparse.Namespace) -> int:
    from airflow_octorpa.rate_limit import DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS, pool_file

    name, size, limits = DEFAULT_POOL, DEFAULT_POOL_SIZE, DEFAULT_RATE_LIMITS
    if args.conn_id:
        config = connection_config(args.conn_id)
        name, size, limits = config.pool, config.pool_size, config.rate_limits
    print(json.dumps(pool_file(name, size, limits), ensure_ascii=False, indent=2))
    return EXIT_OK


def cleanup(args: argparse.Namespace) -> int:
    from airflow.utils.session import create_session

    from airflow_octorpa.run_records import sweep

    if args.older_than is not None and args.older_than < 0:
        raise UsageError("--older-than takes a number of seconds, 0 or more.")
    with create_session() as session:
        result = sweep(session, args.older_than)
    print(f"octorpa cleanup: {result}.")
    return EXIT_OK
