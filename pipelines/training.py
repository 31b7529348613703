"""The training flow: DVC stages as Prefect tasks, then champion comparison, gate, register,
compare-and-set promotion (or, with gate.require_approval, the challenger alias and, on a server, a pause for the
reviewer's decision), report, dvc push.

Stages run through DVC (cached, hashed into dvc.lock), their commands in this process; one DVC status pass
first tells which of them are unchanged, so an unchanged re-run reads dvc.yaml and dvc.lock once, not per
stage. The steps after them read or change the model registry, so they are flow tasks and not DVC stages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.runtime import flow_run
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from finsent import layout, servability, stages
from finsent.cli import main as call_cli
from finsent import overrides as run_overrides
from finsent.config import load_params
from finsent.data.drift import check_drift, stop_reason, summary_line
from finsent.local_api import server_configured
from finsent.notify import flow_run_failed
from finsent.registry import champion_profile, registry_state, tracking_step
from finsent.release import (AWAITING_APPROVAL, Promotion, compare_with_champion, gate_candidate, promote_in_turn,
                             publish_report, register_candidate, servability_checked)
from finsent.review import wait_for_review
from finsent.runtime import RUN_NAME_ENV, apply_defaults, echo_run_lines
from finsent.tracking import FlowRunRecord, flow_run_record, link_artifact
from finsent.versioning import push, reproduce_stage, unchanged_stages

NETWORK_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}  # registry / remote calls


def _params(root: Path):
    return load_params(root / "params.yaml")


def _read(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


@task(name="stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def stage_task(root: Path, stage: str, unchanged: bool = False) -> dict:
    if unchanged:  # DVC's status pass judged it already: nothing to run, nothing to hash again
        return {"stage": stage, "ran": False, "error": None}
    return reproduce_stage(root, stage, call_cli)  # the command in this process: torch etc. imported once


@task(name="dvc-status")
def status_task(root: Path) -> frozenset[str]:
    return unchanged_stages(root)


@task(name="champion-data-profile", **NETWORK_RETRIES)
@tracking_step("champion data profile")
def reference_task(root: Path) -> tuple[dict | None, str]:
    return champion_profile(_params(root).registry)


@task(name="data-drift")
def drift_task(root: Path, reference: tuple[dict | None, str]) -> dict:
    profile, name = reference
    return check_drift(profile, name, root / layout.DATA_PROFILE, _params(root).validation.drift,
                       root / layout.DRIFT_REPORT)


@task(name="registry-state", **NETWORK_RETRIES)
@tracking_step("registry state")
def state_task(root: Path) -> dict:
    return registry_state(root, _params(root))


@task(name="compare-with-champion", **NETWORK_RETRIES)
@tracking_step("compare with champion")
def compare_task(root: Path, state: dict) -> dict:
    return compare_with_champion(root, _params(root), state)


@task(name="gate")
def gate_task(root: Path) -> dict:
    return gate_candidate(root, _params(root))


@task(name="register", **NETWORK_RETRIES)
@tracking_step("register")
def register_task(root: Path, state: dict, verdict: dict, record: FlowRunRecord) -> dict:
    return register_candidate(root, _params(root), state, verdict, record.run_id)


@task(name="promote", **NETWORK_RETRIES)  # safe to retry: the alias moves by compare-and-set
@tracking_step("promote")
def promote_task(root: Path, registration: dict, verdict: dict, state: dict, comparison: dict) -> Promotion:
    return promote_in_turn(root, _params(root), registration, verdict, state, comparison)


@task(name="publish-report", **NETWORK_RETRIES)
@tracking_step("publish report")
def report_task(root: Path, registration: dict, verdict: dict, promotion: Promotion, record: FlowRunRecord) -> None:
    report = publish_report(root, _params(root), registration, verdict, promotion, record.run_id)
    create_markdown_artifact(markdown=report, key="finsent-evaluation-report",
                             description=f"{registration['model_name']} v{registration['version']}")


@task(name="dvc-push", **NETWORK_RETRIES)
def push_task(root: Path) -> int:
    return push(root)


def _ensure_crash_detection() -> None:
    from pipelines.crash_detection import ensure_crash_detection

    try:
        ensure_crash_detection()
    except Exception as exc:  # e.g. a server without automations: a warning, the run goes on
        print(f"  warning: crash detection automation not created ({type(exc).__name__}: {exc})", flush=True)


def _run_name() -> str:
    """'train · financial_news.csv · lora' in the Prefect UI (with this run's data and method where its parameters
    override them); a params error is the flow's to report, not the name's."""
    try:
        parameters = flow_run.parameters
        method = run_overrides.parse(parameters.get("overrides") or []).get("peft.method")
        return _params(Path(parameters["project_dir"])).run_label(parameters.get("data"), method)
    except Exception:  # a name must never fail the run: a params error is reported by the flow's first task
        return "train"


@flow(name="finsent-training", flow_run_name=_run_name, log_prints=True, on_failure=[flow_run_failed],
      on_crashed=[flow_run_failed])
def training_flow(project_dir: str, data: str | None = None, overrides: list[str] | None = None) -> dict:
    """Train, gate, register and promote the project's model.

    Args:
        project_dir: the project folder (params.yaml, dvc.yaml) on the machine that runs the flow.
        data: a data file or drop folder to train on instead of params.yaml's data.sources, for this run only.
        overrides: params values for this run only, each "section.key=value", e.g. "train.epochs=2",
            "peft.method=ia3", "peft.lora.r=16"; checked (known key, type) before anything runs.
    """
    root = Path(project_dir)
    # A worker's flow run did not come through the CLI: the project's embedded stores unless the worker's
    # environment names servers (MLFLOW_TRACKING_URI, ...): its environment is the configuration.
    apply_defaults(root)
    echo_run_lines()  # the lines printed below: the run's Logs tab and this process's stdout
    os.environ[RUN_NAME_ENV] = flow_run.name or "train"  # what the stage processes record the run as (GX)
    if server_configured():  # a server, shared by runs that may outlive their worker
        _ensure_crash_detection()
    with run_overrides.applied(root, list(overrides or []), data):  # e.g. set in the UI's custom run form
        return _train(root)


def _train(root: Path) -> dict:
    with flow_run_record(root, _params(root)) as record:  # one MLflow run, as long as this flow run
        link_artifact(record)
        outcomes, unchanged = [], frozenset()
        for name in stages.NAMES:
            if name == stages.JUDGED_TOGETHER[0]:
                unchanged = status_task(root)
            outcome = stage_task(root, name, name in unchanged)
            outcomes.append(outcome)
            if outcome["ran"]:  # what it made is the next stages' input: DVC judges each of them again
                unchanged = frozenset()
            if outcome["error"]:
                return Failed(message=record.fail(f"stage '{name}': {outcome['error']}"))
            done = stages.stage(name).done
            print(f"  {name:<9} {done if outcome['ran'] else 'unchanged, skipped (DVC cache)'}", flush=True)
            if name == "validate":  # drift is judged before any training time is spent
                drift = drift_task(root, reference_task(root))
                if stop_reason(drift):
                    return Failed(message=record.fail(stop_reason(drift)))
                print(f"  {'drift':<9} {summary_line(drift)}" + (" (warning)" if drift["drifted"] else ""),
                      flush=True)
        state = state_task(root)
        comparison = compare_task(root, state)
        verdict = gate_task(root)
        if servability_checked(_params(root), verdict, state):
            servability.start_early()  # the check's fresh process imports while the version is registered
        registration = register_task(root, state, verdict, record)
        promotion = promote_task(root, registration, verdict, state, comparison)
        if promotion.outcome == AWAITING_APPROVAL and _params(root).gate.approval_wait_minutes > 0 \
                and server_configured():  # a server, whose UI shows the Resume form
            promotion = wait_for_review(_params(root), registration, promotion)
        report_task(root, registration, verdict, promotion, record)
        pushed = push_task(root)
    return {"stages": outcomes, "drift": drift, "gate": verdict, "registration": registration, "promotion": promotion,
            "comparison": comparison, "pushed_files": pushed, "metrics": _read(root, layout.METRICS)}
