"""``octorpa trigger``: one call, within the connection's rate limits as this machine counts them."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from airflow_octorpa.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_RATE_LIMITED,
    EXIT_UNKNOWN_OUTCOME,
    EXIT_USAGE,
    fail,
)


def trigger(args: argparse.Namespace) -> int:
    from airflow_octorpa.exceptions import CallOutcome, OctoRpaConfigurationError, OctoRpaError
    from airflow_octorpa.hooks.octorpa import OctoRpaHook

    try:
        params = _params(args.param, args.params_json)
        hook = OctoRpaHook(args.conn_id)
        call = hook.prepare(params, bot_id=args.bot_id)
    except (OctoRpaConfigurationError, ValueError) as err:
        return fail(EXIT_USAGE, f"Nothing sent: {err}")
    try:
        with RecentTriggerCalls.for_connection(args.conn_id).locked() as times:
            if (wait := wait_before_next(times, hook.config.rate_limits)) > 0:
                return fail(
                    EXIT_RATE_LIMITED,
                    f"Nothing sent: another call now would exceed the connection's rate limits "
                    f"({hook.config.rate_limits}); try again in {wait:.1f} s.",
                )
            times.append(time.time())  # before sending: a call that may have started counts too
    except RecentCallsError as err:
        return fail(EXIT_USAGE, f"Nothing sent: {err}")
    try:
        result = hook.send(call)
    except OctoRpaError as err:
        code = EXIT_UNKNOWN_OUTCOME if err.outcome is CallOutcome.UNKNOWN else EXIT_FAILED
        return fail(code, str(err))
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


class RecentCallsError(Exception):
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


class RecentTriggerCalls:
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
    def for_connection(cls, conn_id: str, state_home: Path | None = None) -> RecentTriggerCalls:
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
            raise RecentCallsError(self._problem("cannot open its lock", err)) from None
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
            raise RecentCallsError(self._problem("cannot create its folder", err)) from None
        if not stat.S_ISDIR(info.st_mode):
            raise RecentCallsError(
                f"the call log's folder {str(folder)!r} is not a folder (a link or a file); remove it"
            )
        if info.st_uid != os.getuid():
            raise RecentCallsError(
                f"the call log's folder {str(folder)!r} belongs to another user; set XDG_STATE_HOME to a folder "
                "of your own"
            )
        if info.st_mode & 0o077:  # made by an earlier version with the default umask
            try:
                os.chmod(folder, 0o700)
            except OSError as err:
                raise RecentCallsError(self._problem("cannot make its folder private", err)) from None
        return folder

    def _read(self) -> list[float]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise RecentCallsError(self._problem("cannot be read", err)) from None
        with os.fdopen(fd, "rb") as file:
            raw = file.read(1024 * 1024)
        try:
            times = [float(t) for t in json.loads(raw)]
        except (ValueError, TypeError, RecursionError):
            times = []
        else:
            if all(math.isfinite(t) for t in times):
                return times
        raise RecentCallsError(
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
            raise RecentCallsError(self._problem("cannot be written", err)) from None

    def _problem(self, what: str, err: OSError) -> str:
        return (
            f"the call log {str(self.path)!r} {what} ({err.strerror or type(err).__name__}); fix its folder's "
            "permissions or set XDG_STATE_HOME to a folder of your own"
        )
