"""``octorpa emulator`` (or ``octorpa-emulator``, ``python -m airflow_octorpa.emulator``): serve the
emulator on loopback."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from airflow_octorpa.emulator.config import EmulatorConfig, default_config
from airflow_octorpa.emulator.server import OctoRpaEmulator


def _built_in_apps() -> str:
    lines = ["built-in webhooks (without --config), each at http://127.0.0.1:<port>/api/v1/bots/webhooks/<id>/invoke:"]
    for webhook in default_config().webhooks.values():
        reports = ", reports its end when given airflow_callback_url" if webhook.callback else ""
        lines.append(f"  {webhook.id}: app {webhook.app.name}, robot {webhook.robot}, secret {webhook.secret}{reports}")
    lines.append("The start-up line (JSON) gives the port, each webhook's URL and its secret.")
    return "\n".join(lines)


def _parser(prog: str = "octorpa emulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local stand-in for the Octopus RPA webhook service.",
        epilog=_built_in_apps(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1; ::1 for IPv6; anything but loopback is warned about)",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one (default)")
    parser.add_argument("--config", type=Path, help="JSON file of robots and webhooks (default: built-in demo)")
    parser.add_argument("--rate-limits", help="override the limits, e.g. '5/second;20/minute'")
    parser.add_argument("--port-file", type=Path, help="write the chosen port to this file once serving")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    config = EmulatorConfig.from_file(args.config) if args.config else default_config()
    if args.rate_limits:
        config.rate_limits = args.rate_limits
    emulator = OctoRpaEmulator(config, host=args.host, port=args.port).start()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    webhooks = {w: emulator.webhook_url(w) for w in config.webhooks}
    # A local stand-in's test secrets: what a connection to it needs.
    secrets = {w: spec.secret for w, spec in config.webhooks.items()}
    announced = {"url": emulator.url, "port": emulator.port, "webhooks": webhooks, "secrets": secrets}
    print(json.dumps(announced, ensure_ascii=False))
    sys.stdout.flush()
    if args.port_file:
        args.port_file.write_text(str(emulator.port), encoding="utf-8")
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
