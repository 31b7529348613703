"""`finsent run`: the main job. Runs the Prefect training flow and prints what came out of it."""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from pathlib import Path

from finsent import layout, stages
from finsent.config import load_params
from finsent.errors import FinsentError
from finsent.data.drift import summary_line
from finsent.evaluate.gates import describe
from finsent.local_api import start_local_prefect_api
from finsent.runtime import collector_paused, echo_run_lines, tracking_uri


class _DropLockedDatabaseNoise(logging.Filter):
    """Prefect's ephemeral API can log a 'database is locked' traceback from a telemetry insert race at
    start-up; it is harmless (the run carries on), so it must not reach the user's console.
    The race's source, the server's telemetry service, is also switched off (runtime.apply_defaults
    sets PREFECT_SERVER_ANALYTICS_ENABLED=false, inherited by the ephemeral server's process)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return "database is locked" not in text


class _FailuresAreTheCliLine(logging.Filter):
    """A failed task or flow run is reported by the CLI as one line ("finsent: error: ..."); Prefect's own
    console records of it (the exception with its traceback, "Finished in state Failed") would print the same
    failure again as a traceback. They still reach the Prefect API and UI; FINSENT_DEBUG=1 shows them here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.levelno < logging.ERROR or not record.name.startswith(("prefect.task_runs", "prefect.flow_runs"))
                or bool(os.environ.get("FINSENT_DEBUG")))


def _quiet_prefect() -> None:
    """Attach the filters to every handler (a logger's own filters skip records of its children); the failure
    filter to console handlers only; the flows' own lines echoed to stdout (runtime.echo_run_lines)."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    for handler in {handler for logger in loggers for handler in logger.handlers}:
        handler.addFilter(_DropLockedDatabaseNoise())
        if isinstance(handler, logging.StreamHandler):
            handler.addFilter(_FailuresAreTheCliLine())
    echo_run_lines()


# Imported while the local API comes up: what the stages import anyway and what fits in the API's usual start
# (about 1.5 s after the flow's own imports). peft's import (1.5 s) does not fit, and an unchanged re-run, which
# imports none of these, would wait for it: measured 7.9 s against 6.7 s for that re-run.
STAGE_LIBRARIES = ("torch", "transformers")


def run_flow(root: Path, module: str, name: str, **parameters):
    """Run the flow ``pipelines.<module>.<name>`` of the project at ``root`` with quiet logs; -> its result.
    A failed run raises FinsentError: the task's own one-line error when it raised one."""
    import importlib

    with collector_paused():  # what these imports make lives until exit
        local_api_up = start_local_prefect_api()  # comes up while the flow's libraries are imported
        sys.path.insert(0, str(root))
        flow = getattr(importlib.import_module(f"pipelines.{module}"), name)  # imports prefect: its log handlers
        _quiet_prefect()
        from finsent.tracking import open_stores

        open_stores()  # both flows track to MLflow: its stores open while the local API comes up
        # Until the API answers, import what the stages and the scoring import anyway, one library at a time
        local_api_up(meanwhile=[functools.partial(importlib.import_module, name) for name in STAGE_LIBRARIES])
    state = flow(**parameters, return_state=True)
    if state.is_failed():
        error = state.result(raise_on_failure=False)
        raise error if isinstance(error, FinsentError) else FinsentError(state.message)
    return state.result()


def run(root: Path, data: str | None = None, data_format: str | None = None, overrides: list[str] = ()) -> dict:
    """The training flow on params.yaml with ``overrides`` (``section.key=value``) and ``data`` applied for
    this run only (params.yaml is the same afterwards)."""
    from finsent import overrides as run_overrides
    from finsent.run_guard import exclusive_run, restore_params_when_killed

    with exclusive_run(root, "finsent run"):
        if run_overrides.restore_leftover(root):
            print("finsent: params.yaml restored (an interrupted run had left its -S / --data overrides in it)",
                  flush=True)
        with run_overrides.applied(root, list(overrides), data, data_format):
            restore_params_when_killed(root)
            return _run(root)


def _run(root: Path) -> dict:
    params_file = root / "params.yaml"
    params = load_params(params_file)
    print(f"finsent: training on {', '.join(map(str, params.data.sources))} (params: {params_file})", flush=True)
    try:
        result = run_flow(root, "training", "training_flow", project_dir=str(root))
    except FinsentError as exc:
        raise FinsentError(f"{exc}; nothing registered, no alias moved") from exc
    print_summary(root, params, result)
    result["promotion"].raise_unless_champion(result["registration"]["version"], params.registry.champion_alias)
    return result


def print_summary(root: Path, params, result: dict) -> None:
    from mlflow import MlflowClient

    from finsent.onnx_model import read_choice
    from finsent.registry import aliases_of

    registration, metrics, promotion = result["registration"], result["metrics"], result["promotion"]
    trained = any(s["ran"] for s in result["stages"] if s["stage"] == "train")
    if not any(s["ran"] for s in result["stages"] if not stages.stage(s["stage"]).always_changed):
        print("finsent: nothing changed since the last run: no stage ran, nothing trained."
              if not registration["new_version"] else "finsent: no stage ran (outputs from the DVC cache).")
    aliases = ", ".join(aliases_of(MlflowClient(), registration["model_name"], registration["version"])) or "no alias"
    state = "new version" if registration["new_version"] else "already registered"
    print(f"finsent: model '{registration['model_name']}' version {registration['version']} [{aliases}] ({state})")
    print(f"  decision: {promotion.decision}")
    data = json.loads((root / layout.VALIDATION_REPORT).read_text())["accounting"]
    print(f"  data: read {data['rows_read']} = accepted {data['rows_accepted']} + quarantined "
          f"{data['rows_quarantined']} ({layout.QUARANTINE}) + duplicates merged {data['duplicates_merged']}")
    drift = result["drift"]
    print(f"  drift: {summary_line(drift)}")
    print(f"  test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
          f"(95 % CI {metrics['macro_f1_ci_low']:.3f}-{metrics['macro_f1_ci_high']:.3f}) "
          f"on {metrics['test_rows']} held-out sentences; ECE {metrics['ece']:.3f}")
    comparison = result["comparison"]
    if comparison.get("champion"):
        paired = comparison["paired"]
        print(f"  vs champion v{comparison['champion_version']}: macro-F1 {comparison['champion']['macro_f1']:.3f}, "
              f"difference {paired['macro_f1_diff']:+.3f} (p not better {paired['p_value_not_better']:.3f}, "
              f"McNemar p {comparison['mcnemar']['mcnemar_p_value']:.3f})")
    checks = result["gate"]["checks"]
    if result["gate"]["passed"]:
        print(f"  gates passed: all {len(checks)} checks (table in {layout.EVAL_REPORT_MD})")
    else:
        print(f"  gates FAILED: {describe(result['gate'], failed_only=True)}")
    choice = read_choice(root / layout.ONNX_DIR)
    if choice is not None:
        print(f"  serving: {choice.backend} ({choice.reason})")
    print(f"  MLflow run {registration['run_id']} (experiment '{params.registry.experiment}')"
          f"{'' if trained else '; adapter from cache'}")
    print(f"  look:    mlflow ui --backend-store-uri {tracking_uri(root)}")
    print("  predict: finsent predict \"Operating profit rose 20 % to EUR 3.1 mn\"")
    print(f"  files:   {layout.EVAL_REPORT_MD}, {layout.EVAL_DIR}/ (metrics, plots), {layout.ADAPTER_DIR}/ (adapter), "
          f"{layout.ONNX_DIR}/ (served model)")
