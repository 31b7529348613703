"""Notifications for operators: a training run failed, the monitor raised an alert.

``send`` always reports the event as one line (the Prefect run's log when called inside a flow or task
run, so it also shows in the Prefect UI; else stderr), and POSTs it as JSON to the webhook in
``FINSENT_WEBHOOK_URL`` when that is set. A failing webhook is reported in the returned dict and the
line; ``send`` never raises: a notification must not fail the run it reports on.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone

WEBHOOK_ENV = "FINSENT_WEBHOOK_URL"
TIMEOUT_SECONDS = 10


def _post(url: str, payload: dict) -> str:
    """POST ``payload`` as JSON -> "sent" or "failed: <why>" (never raises)."""
    if not url.lower().startswith(("http://", "https://")):
        return f"failed: {WEBHOOK_ENV} must be an http(s) URL"
    body = json.dumps(payload, default=str).encode("utf-8")
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "finsent-notify"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return "sent" if 200 <= response.status < 300 else f"failed: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"failed: HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"failed: {exc.reason}"
    except Exception as exc:  # timeouts, malformed URLs, ...: reported, never raised
        return f"failed: {type(exc).__name__}: {exc}"


def _emit(line: str) -> None:
    """One line: into the Prefect run's log when inside a run (console + UI), else to stderr."""
    try:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() or TaskRunContext.get():
            from prefect.logging import get_run_logger

            get_run_logger().warning(line)
            return
    except Exception:  # no Prefect, or no usable run logger: stderr below
        pass
    print(line, file=sys.stderr, flush=True)


def send(event: str, message: str, details: dict | None = None) -> dict:
    """Report ``event`` (e.g. "training.failed", "monitor.alert") with a one-line ``message``.

    Returns {"event", "message", "webhook"} where webhook is "sent", "not configured" or "failed: <why>".
    """
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    payload = {"event": event, "message": message, "details": details or {},
               "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    status = _post(url, payload) if url else "not configured"
    text = " ".join(str(message).split())  # one line, whatever the message holds
    try:
        _emit(f"finsent: {event}: {text} (webhook: {status})")
    except Exception:  # pragma: no cover - a closed stderr must not turn a notification into a failure
        logging.getLogger(__name__).debug("could not write the notification line", exc_info=True)
    return {"event": event, "message": message, "webhook": status}


def flow_run_failed(flow, flow_run, state) -> None:
    """Prefect on_failure / on_crashed hook of the training flow: ``send`` "training.failed". An interactive
    `finsent run` without a webhook is left alone: its CLI prints the failure as its one error line."""
    if flow_run.deployment_id is None and not os.environ.get(WEBHOOK_ENV):
        return
    send("training.failed", f"flow run '{flow_run.name}' of {flow.name} ended {state.name}: {state.message}",
         {"flow": flow.name, "flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
          "state": state.name, "state_message": state.message,
          "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
          "project_dir": (flow_run.parameters or {}).get("project_dir")})
