"""Where run reports are kept: Airflow Variables, one per trigger task instance.

A trigger task that asks for a callback registers its call (``waiting``) before sending it, since
an app can report within milliseconds. The route (api-server or webserver, which have the
database) turns ``waiting`` into the report with a conditional update and, in the same
transaction, inserts the record's *end claim*. A wait that gives up writes the claim first and
reads the record after: a report committed before that is used, and one arriving after it cannot
insert the claim and is refused. So a report answered 200 is never thrown away, on any database,
although the Task SDK offers no conditional write.

Keys are found without a scan: the record of a task instance is ``octorpa_report.<digest>`` (the
digest of DAG, run, task and map index), its claim ``octorpa_report.<digest>.end``. The callback
token carries the digest, and the record keeps only the SHA-256 of the token's secret part:
whoever may read Variables learns no URL, but whoever may edit them can forge a report.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_octorpa import storage
from airflow_octorpa.storage import CANCEL_SUFFIX, CLAIM_SUFFIX, REPORT_PREFIX, ti_digest

WAITING, SUCCEEDED, FAILED, EXPIRED = "waiting", "succeeded", "failed", "expired"
MAX_REPORT_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 1000
# Every report the route accepts must survive a Variable, a trigger, an XCom and an asset event's
# extra on SQLite, PostgreSQL (JSONB: no U+0000) and MySQL, whose serialisers recurse (~490 levels).
MAX_DEPTH = 32
MAX_VALUES = 2000  # keys, values and list items, all levels together
MAX_KEY_CHARS = 256
MAX_INTEGER = 2**63 - 1  # what a BIGINT and MySQL's JSON keep exactly
_DESCRIPTION = (
    "airflow-provider-octorpa: one RPA run's report (or its end claim). Removed when its DAG run "
    "ends, or by octorpa cleanup; do not edit."
)
_DIGEST = re.compile(r"^[0-9a-f]{32}$")
_LEGACY_KEY = re.compile(r"^[0-9a-f]{64}$")  # earlier 0.3 builds: the key was the token's SHA-256


def report_key_of(dag_id: str, run_id: str, task_id: str, map_index: int, token_sha256: str) -> ReportKey:
    """Where a task instance's call keeps its report."""
    return ReportKey(REPORT_PREFIX + ti_digest(dag_id, run_id, task_id, map_index), token_sha256)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ReportKey:
    """Where one call's report is kept, and the SHA-256 of its token's secret (None: a record of an
    earlier 0.3 build, whose key is that SHA-256)."""

    variable: str
    token_sha256: str | None = None

    @property
    def claim(self) -> str:
        return self.variable + CLAIM_SUFFIX

    @property
    def cancel(self) -> str:
        return self.variable + CANCEL_SUFFIX

    def __str__(self) -> str:
        """The form in the trigger task's XCom (``report_key``)."""
        if self.token_sha256 is None:
            return self.variable[len(REPORT_PREFIX) :]
        return f"{self.variable[len(REPORT_PREFIX) :]}.{self.token_sha256}"

    @classmethod
    def parse(cls, text: str) -> ReportKey | None:
        digest, _, sha = str(text).partition(".")
        if _DIGEST.match(digest) and _LEGACY_KEY.match(sha):
            return cls(REPORT_PREFIX + digest, sha)
        if _LEGACY_KEY.match(text):
            return cls(REPORT_PREFIX + text)
        return None

    @classmethod
    def from_token(cls, token: str) -> ReportKey | None:
        """The key a URL's token names: ``<digest><secret>``, or a 43-character token of an earlier 0.3 build (its SHA-256)."""
        if len(token) == 75 and _DIGEST.match(token[:32]):
            return cls(REPORT_PREFIX + token[:32], _sha256(token[32:]))
        if len(token) == 43:
            return cls(REPORT_PREFIX + _sha256(token))
        return None

    def owns(self, stored: dict[str, Any]) -> bool:
        """Whether the stored record is this call's (a later try of the task replaces it)."""
        if self.token_sha256 is None:
            return True
        return hmac.compare_digest(str(stored.get("token_sha256", "")), self.token_sha256)


@dataclass(frozen=True)
class RunReport:
    """What a run reported: its status, outputs and message."""

    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def same_as(self, stored: dict[str, Any]) -> bool:
        """An identical repeat: same status, JSON-equal outputs, same message (robots retry)."""
        return (
            stored.get("status") == self.status
            and _canonical(stored.get("outputs") or {}) == _canonical(self.outputs)
            and (stored.get("message") or "") == self.message
        )


# -- the report's shape -------------------------------------------------------------------------


class ReportShapeError(ValueError):
    """The report cannot be kept everywhere it goes; the message names the limit."""


def check_text(value: str, what: str) -> None:
    """No U+0000 (PostgreSQL's JSON refuses it) and no lone surrogate (not UTF-8)."""
    if "\x00" in value:
        raise ReportShapeError(f"{what} holds the character U+0000, which Airflow's database cannot store.")
    if any("\ud800" <= char <= "\udfff" for char in value):
        raise ReportShapeError(f"{what} holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text.")


def check_outputs(outputs: dict[str, Any]) -> None:
    """Refuse what a Variable, a trigger, an XCom or an asset event could not carry. Iterative: a
    deep value must not exhaust the stack of the process that checks it."""
    pending: list[tuple[Any, int, str]] = [(outputs, 1, "outputs")]
    count = 0
    while pending:
        value, depth, where = pending.pop()
        count += 1
        if count > MAX_VALUES:
            raise ReportShapeError(f"outputs hold more than {MAX_VALUES} keys, values and items in all.")
        if isinstance(value, (dict, list)) and depth > MAX_DEPTH:
            raise ReportShapeError(f"outputs are nested more than {MAX_DEPTH} levels deep (at {where}).")
        if isinstance(value, dict):
            for key, item in value.items():
                if len(key) > MAX_KEY_CHARS:
                    raise ReportShapeError(f"the output name {key[:40]!r}... is over {MAX_KEY_CHARS} characters.")
                check_text(key, f"the output name {key[:40]!r}")
                count += 1
                pending.append((item, depth + 1, f"{where}.{key[:40]}"))
        elif isinstance(value, list):
            pending.extend((item, depth + 1, f"{where}[{index}]") for index, item in enumerate(value))
        elif isinstance(value, str):
            check_text(value, f"the output {where}")
        elif isinstance(value, bool) or value is None:
            pass
        elif isinstance(value, int):
            if abs(value) > MAX_INTEGER:
                raise ReportShapeError(f"the output {where} is an integer beyond 64 bits; send it as text.")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ReportShapeError(f"the output {where} is NaN or Infinity, which JSON cannot carry.")


# -- the worker and the trigger (Task SDK) ------------------------------------------------------


def registration(dag_id: str, run_id: str, task_id: str, map_index: int, token_sha256: str | None = None) -> str:
    """The stored value of a call that awaits its report (it names its DAG run for the clean-up)."""
    return json.dumps(
        {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index,
            "token_sha256": token_sha256,
            "status": WAITING,
            "registered_at": time.time(),
        }
    )


def register(key: ReportKey, dag_id: str, run_id: str, task_id: str, map_index: int) -> None:
    """Record that the call keyed ``key`` awaits its report; raises when it did not land. An earlier
    call of the task instance (a try that started nothing, or a clear) gives up its record."""
    storage.delete_checked(key.claim)  # a claim left in place would refuse this call's report
    storage.delete_checked(key.cancel)  # and a cancel would stop this call's run
    storage.set_checked(key.variable, registration(dag_id, run_id, task_id, map_index, key.token_sha256), _DESCRIPTION)


class RecordUnreadable(RuntimeError):
    """The record exists, or may, but cannot be read as JSON (another Fernet key, a failed read)."""


def read(key: ReportKey) -> dict[str, Any] | None:
    """The call's record (``status`` is ``waiting`` until a report lands), None when Airflow says
    there is none (a failed read says so too on Airflow 3); raises :class:`RecordUnreadable`."""
    text = storage.get_text(key.variable)
    if text is None:
        return None
    try:
        stored = json.loads(text)
    except (TypeError, ValueError):
        raise RecordUnreadable(f"the Airflow Variable {key.variable!r} does not hold JSON") from None
    if not isinstance(stored, dict):
        raise RecordUnreadable(f"the Airflow Variable {key.variable!r} does not hold a JSON object")
    if not key.owns(stored):
        # A later try of the trigger task registered a new call: this one's wait is over.
        return {"status": EXPIRED, "replaced": True}
    return stored


def expire(key: ReportKey, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """End the wait: the report if one was committed first, else None (and none can land after)."""
    from airflow.providers.common.compat.sdk import Variable

    stored = read(key)
    if stored is None or stored.get("status") != WAITING:
        # Reported, already ended, replaced by a later call of the task, or gone: nothing to claim.
        return stored if stored is not None and stored.get("status") in (SUCCEEDED, FAILED) else None
    Variable.set(key.claim, json.dumps({"dag_id": dag_id, "run_id": run_id, "end": EXPIRED}), description=_DESCRIPTION)
    if storage.get_text(key.claim) is None:
        raise RuntimeError(f"the Airflow Variable {key.claim!r} could not be written")
    stored = read(key)  # a report committed before the claim is used
    if stored is not None and stored.get("status") in (SUCCEEDED, FAILED):
        return stored
    if stored is not None and stored.get("status") == WAITING:
        expired = {**stored, "status": EXPIRED, "expired_at": time.time()}  # the cancel's time, for the run's page
        Variable.set(key.variable, json.dumps(expired), description=_DESCRIPTION)
    return None


# -- the route (metadata database) --------------------------------------------------------------


@dataclass(frozen=True)
class RouteAnswer:
    """What the route answers: an HTTP status and a JSON body."""

    status: int
    body: dict[str, Any]


NOT_FOUND = RouteAnswer(404, {"accepted": False, "error": "No call awaits a report with this token."})


def read_owned(session: Any, key: ReportKey) -> tuple[str | None, dict[str, Any], bool] | RouteAnswer:
    """The call's record as stored (for a conditional update), decoded, and whether Airflow asked
    the run to stop; or the answer when there is none to change: 404 (no such call: forged, or
    replaced by a later call) or 409 (unreadable)."""
    found = storage.read_row(session, key.variable)
    if found is None:
        return NOT_FOUND
    raw, stored = found
    if stored is None:
        return RouteAnswer(409, {"accepted": False, "error": "This call's record cannot be read; nothing changed."})
    if not key.owns(stored):
        return NOT_FOUND
    return raw, stored, cancel_asked(session, key, stored)


def cancel_asked(session: Any, key: ReportKey, stored: dict[str, Any]) -> bool:
    """Whether Airflow has asked the run to stop: a cancel marker, or a wait that has ended."""
    return stored.get("status") == EXPIRED or storage.read_row(session, key.cancel) is not None


def heard(stored: dict[str, Any], cancel: bool) -> dict[str, Any]:
    """The record's change when this request is the app's first after the cancel."""
    return {"cancel_heard_at": time.time()} if cancel and not stored.get("cancel_heard_at") else {}


def record_report(key: ReportKey, report: RunReport, session: Any) -> RouteAnswer:
    """Store ``report`` for the call keyed ``key``: committed before the answer is chosen.

    200 for the first report and an identical repeat, 409 for a contradiction or a wait that has
    ended (nothing changes), 404 for a token that names no call (no row is created). Once Airflow
    has asked the run to stop, the answer says ``"cancel": true``, and the app's ``failed`` report
    is accepted even when the wait has ended (kept as ``after_end``, for the run's page).
    """
    for _ in range(3):  # a lost race is re-read once; a third round cannot be needed
        found = read_owned(session, key)
        if isinstance(found, RouteAnswer):
            return found
        raw, stored, cancel = found
        status = stored.get("status")
        if status == EXPIRED:
            if report.status != FAILED or stored.get("after_end"):
                return RouteAnswer(409, {"accepted": False, "cancel": True,
                                         "error": "The wait for this run has ended; not accepted."})  # fmt: skip
            after_end = {"status": report.status, "message": report.message, "reported_at": time.time()}
            if not storage.replace_if_unchanged(
                session, key.variable, raw, {**stored, **heard(stored, cancel), "after_end": after_end}
            ):
                session.rollback()
                continue
            session.commit()
            return RouteAnswer(200, {"accepted": True, "cancel": True})
        if status != WAITING:
            if report.same_as(stored):
                return RouteAnswer(200, {"accepted": True, "cancel": cancel})
            return RouteAnswer(
                409, {"accepted": False, "cancel": cancel, "error": f"This run already reported {status!r}."}
            )
        reported = {**stored, **heard(stored, cancel), "status": report.status, "outputs": report.outputs,
                    "message": report.message, "reported_at": time.time()}  # fmt: skip
        # Conditional on the value read: of two reports at once, exactly one changes the row. The
        # claim's insert fails once a wait has ended (see expire()).
        if not storage.replace_if_unchanged(session, key.variable, raw, reported):
            session.rollback()
            continue
        claim = {"dag_id": stored.get("dag_id"), "run_id": stored.get("run_id"), "end": "reported"}
        if not storage.insert_new(session, key.claim, claim, _DESCRIPTION):
            session.rollback()
            return RouteAnswer(409, {"accepted": False, "cancel": True,
                                     "error": "The wait for this run has ended; not accepted."})  # fmt: skip
        session.commit()
        return RouteAnswer(200, {"accepted": True, "cancel": cancel})
    return RouteAnswer(409, {"accepted": False, "error": "Another report changed this call at the same time."})


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
