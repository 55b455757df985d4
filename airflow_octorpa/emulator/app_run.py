"""What an emulated app does with the callback URL it was given: its last step reports the run's
end; with ``ask_every``, it reports progress that often while it runs and stops when Airflow says
``"cancel": true``, reporting ``failed`` as a real app's cancel branch would (see the Waiting page).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from airflow_octorpa.emulator.config import CallbackSpec

CANCELLED_MESSAGE = "cancelled: Airflow asked the run to stop"


class AppRun:
    """One run's calls to Airflow, noted in ``run["callback"]`` under the account's lock."""

    def __init__(
        self, spec: CallbackSpec, url: str, run: dict[str, Any], lock: threading.Lock, report_id: str | None = None
    ) -> None:
        import requests

        self.spec, self.url, self.run, self._lock = spec, url, run, lock
        self.report_id = report_id  # sent with the end report (an inbox's de-duplication key)
        self.session = requests.Session()
        self.session.trust_env = False  # the app reaches Airflow directly
        run["callback"] = {"reports": [], "progress": [], "cancelled_at": None}

    def start(self) -> None:
        thread = threading.Thread(target=self._steps, name="octorpa-emulated-app", daemon=True)
        thread.start()

    def _steps(self) -> None:
        if self.spec.ask_every > 0 and self._runs_until_cancelled():
            self._send([("failed", {}, CANCELLED_MESSAGE)])
            return
        if self.spec.ask_every <= 0:
            time.sleep(self.spec.after)
        self._send(self._final_reports())

    def _runs_until_cancelled(self) -> bool:
        """Work for ``after`` seconds, reporting progress after each ``ask_every`` of it; whether told to stop."""
        started = time.monotonic()
        step = 0
        while (step + 1) * self.spec.ask_every <= self.spec.after:
            time.sleep(max(0.0, started + (step + 1) * self.spec.ask_every - time.monotonic()))
            step += 1
            share = min(1.0, (time.monotonic() - started) / self.spec.after) if self.spec.after else 1.0
            body = {"status": "running", "message": f"第 {step} 步 (step {step})", "progress": round(share, 3)}
            seen = self._request("POST", json=body)
            with self._lock:
                self.run["callback"]["progress"].append({**seen, "sent_at": time.time(), "step": step})
            if seen.get("cancel") is True:
                with self._lock:
                    self.run["callback"]["cancelled_at"] = time.time()
                return True
        time.sleep(max(0.0, started + self.spec.after - time.monotonic()))  # the last part of the work
        return False

    def _final_reports(self) -> list[tuple[str, dict[str, Any], str]]:
        spec = self.spec
        reports = [(spec.status, spec.outputs, spec.message)]
        if spec.fault == "twice":
            reports.append(reports[0])
        elif spec.fault == "contradiction":
            reports.append(("failed" if spec.status == "succeeded" else "succeeded", {}, "contradiction"))
        return reports

    def _send(self, reports: list[tuple[str, dict[str, Any], str]]) -> None:
        if self.spec.fault == "forged":
            self.url = self.url[:-43] + "F" * 43  # the right record, the wrong secret
        extra = {"report_id": self.report_id} if self.report_id is not None else {}
        for status, outputs, message in reports:
            if self.spec.method == "GET":
                seen = self._request("GET", params={"status": status, "message": message, **extra})
            else:
                seen = self._request("POST", json={"status": status, "outputs": outputs, "message": message, **extra})
            with self._lock:
                self.run["callback"]["reports"].append({**seen, "sent_at": time.time(), "status": status})

    def _request(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """The answer's status, body and ``cancel``; an error's name when there was none."""
        import requests

        try:
            answer = self.session.request(method, self.url, timeout=30, **kwargs)
        except requests.RequestException as err:
            return {"status_code": None, "error": type(err).__name__}
        try:
            cancel = answer.json().get("cancel")
        except (ValueError, AttributeError):
            cancel = None
        return {"status_code": answer.status_code, "body": answer.text[:500], "cancel": cancel}
