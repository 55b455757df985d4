"""``octorpa inbox create|list|rotate|delete``: the standing URLs apps report to (Airflow 3)."""

from __future__ import annotations

import argparse
import datetime
from typing import Any

from airflow_octorpa.cli.common import EXIT_FAILED, EXIT_OK, UsageError, fail


def inbox_command(args: argparse.Namespace) -> int:
    from airflow.utils.session import create_session

    from airflow_octorpa.callbacks import inbox
    from airflow_octorpa.triggers.inbox import require_event_scheduling

    try:
        require_event_scheduling()  # an inbox nothing can watch would only fill up
    except RuntimeError as err:
        return fail(EXIT_FAILED, str(err))
    try:
        with create_session() as session:
            if args.action == "list":
                return _print_list(inbox.summaries(session))
            if args.action == "delete":
                dropped = inbox.delete(session, args.name)
                print(
                    f"Deleted the inbox {args.name!r}"
                    + (f" and the {dropped} reports it still held." if dropped else ".")
                )
                return EXIT_OK
            base_url = _base_url()
            make = inbox.create if args.action == "create" else inbox.rotate
            url = make(session, args.name, base_url)
    except inbox.InboxError as err:
        return fail(EXIT_FAILED, str(err))
    done = (
        "Created the inbox"
        if args.action == "create"
        else "Rotated the token of the inbox (the old URL no longer works)"
    )
    print(f"{done} {args.name!r}. Its URL, shown once (only a hash of its token is kept):")
    print(url)
    print(f"Schedule DAGs on the asset {inbox.asset_uri(args.name)} (airflow_octorpa.triggers.inbox.inbox_asset).")
    return EXIT_OK


def _base_url() -> str:
    from airflow_octorpa.callbacks.token import callback_base_url
    from airflow_octorpa.exceptions import OctoRpaConfigurationError

    try:
        return callback_base_url()
    except OctoRpaConfigurationError as err:
        raise UsageError(f"An inbox's URL is built like a callback's: {err}") from None


def _print_list(summaries: list[Any]) -> int:
    if not summaries:
        print("No inbox yet: `octorpa inbox create <name>` makes one.")
        return EXIT_OK
    print(f"{'NAME':<32} {'CREATED':<20} {'LAST REPORT':<20} {'RECEIVED':>8} {'DELIVERED':>9} {'HELD':>5}")
    for summary in summaries:
        print(f"{summary.name:<32} {_when(summary.created_at):<20} {_when(summary.last_report_at):<20} "
              f"{summary.received:>8} {summary.delivered:>9} {summary.received - summary.delivered:>5}")  # fmt: skip
    return EXIT_OK


def _when(seconds: float | None) -> str:
    if not seconds:
        return "never"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def add_parser(commands: Any) -> None:
    parser = commands.add_parser(
        "inbox",
        help="make, list, rotate or delete the inboxes apps report to (Airflow 3)",
        description="An inbox is a standing URL: each report an app sends to it becomes one event of the "
        "asset octorpa://inbox/<name>, which schedules the DAGs on it, whoever started the app. Needs the "
        "metadata database and, for create and rotate, [octorpa] callback_base_url (or Airflow's base URL).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, text in (("create", "make an inbox and print its URL once"),
                         ("rotate", "give an inbox a new URL (the old one stops working; held reports stay)"),
                         ("delete", "remove an inbox and the reports it still holds")):  # fmt: skip
        actions.add_parser(action, help=text, description=text).add_argument("name", help="the inbox's name")
    actions.add_parser("list", help="the inboxes, when each last received a report (never a token)")
    parser.set_defaults(run=inbox_command)
