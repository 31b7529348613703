"""The training flow: DVC stages as Prefect tasks, then champion comparison, gate, register,
compare-and-set promotion, report, dvc push.

Stages run through DVC (cached, hashed into dvc.lock). The steps after them read or change the
model registry, so they are flow tasks and not DVC stages.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError
from prefect.states import Failed

from finsent import layout, stages
from finsent.config import load_params
from finsent.data.drift import check_drift, describe as describe_drift, stop_reason
from finsent.registry import champion_profile, registry_state, tracking_step
from finsent.release import (Promotion, compare_with_champion, gate_candidate, promote_candidate, publish_report,
                             refuse, register_candidate)
from finsent.runtime import apply_defaults
from finsent.versioning import push, reproduce_stage

NETWORK_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}  # registry / remote calls
PROMOTION_LIMIT = "finsent-promotion"  # Prefect global concurrency limit: promotions at a time


def _params(root: Path):
    return load_params(root / "params.yaml")


def _read(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


@task(name="stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def stage_task(root: Path, stage: str) -> dict:
    return reproduce_stage(root, stage)


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
def register_task(root: Path, state: dict, verdict: dict) -> dict:
    return register_candidate(root, _params(root), state, verdict)


@task(name="promote", **NETWORK_RETRIES)  # safe to retry: the alias moves by compare-and-set
@tracking_step("promote")
def promote_task(root: Path, registration: dict, verdict: dict, compared_with: str | None) -> Promotion:
    return promote_candidate(_params(root), registration, verdict, compared_with)


@task(name="refuse-promotion", **NETWORK_RETRIES)
@tracking_step("promote")
def refuse_task(root: Path, registration: dict, verdict: dict, decision: str) -> Promotion:
    return refuse(_params(root), registration, verdict, decision)


@task(name="publish-report", **NETWORK_RETRIES)
@tracking_step("publish report")
def report_task(root: Path, registration: dict, verdict: dict, promotion: Promotion) -> None:
    report = publish_report(root, _params(root), registration, verdict, promotion)
    create_markdown_artifact(markdown=report, key="finsent-evaluation-report",
                             description=f"{registration['model_name']} v{registration['version']}")


@task(name="dvc-push", **NETWORK_RETRIES)
def push_task(root: Path) -> int:
    return push(root)


def promotion_slot(schedule):
    """A slot of the global concurrency limit PROMOTION_LIMIT (a context manager), the limit created with
    ``schedule.concurrency_limit`` slots when missing: Prefect 3 skips a limit that does not exist with only a
    warning. Works on any Prefect API, the embedded ephemeral one of `finsent run` included."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.context import FlowRunContext
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(PROMOTION_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=PROMOTION_LIMIT, limit=schedule.concurrency_limit))
            except ObjectAlreadyExists:  # another run created it meanwhile
                pass
    context = FlowRunContext.get()
    holder = (ConcurrencyLeaseHolder(type="flow_run", id=context.flow_run.id)
              if context is not None and context.flow_run is not None else None)
    return concurrency(PROMOTION_LIMIT, occupy=1, timeout_seconds=schedule.promotion_timeout_seconds, holder=holder)


def _ensure_crash_detection() -> None:
    from pipelines.crash_detection import ensure_crash_detection

    try:
        ensure_crash_detection()
    except Exception as exc:  # e.g. a server without automations: a warning, the run goes on
        print(f"  warning: crash detection automation not created ({type(exc).__name__}: {exc})", flush=True)


def notify_failure(flow, flow_run, state) -> None:
    """on_failure / on_crashed hook: report the run (a log line; a POST when FINSENT_WEBHOOK_URL is set).
    An interactive `finsent run` without a webhook is left alone: its CLI prints the failure as its one error line."""
    import os

    from finsent import notify

    if flow_run.deployment_id is None and not os.environ.get(notify.WEBHOOK_ENV):
        return
    notify.send("training.failed", f"flow run '{flow_run.name}' of {flow.name} ended {state.name}: {state.message}",
                {"flow": flow.name, "flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name,
                 "state": state.name, "state_message": state.message,
                 "deployment_id": str(flow_run.deployment_id) if flow_run.deployment_id else None,
                 "project_dir": (flow_run.parameters or {}).get("project_dir")})


def _run_name() -> str:
    """'train · financial_news.csv · lora' in the Prefect UI; a params error is the flow's to report, not the name's."""
    from prefect.runtime import flow_run

    try:
        return _params(Path(flow_run.parameters["project_dir"])).run_label()
    except Exception:  # a name must never fail the run: a params error is reported by the flow's first task
        return "train"


@flow(name="finsent-training", flow_run_name=_run_name, on_failure=[notify_failure], on_crashed=[notify_failure])
def training_flow(project_dir: str) -> dict:
    root = Path(project_dir)
    # A worker's flow run did not come through the CLI: the project's embedded stores unless the worker's
    # environment names servers (MLFLOW_TRACKING_URI, ...): its environment is the configuration.
    apply_defaults(root)
    if os.environ.get("PREFECT_API_URL"):  # a server, shared by runs that may outlive their worker
        _ensure_crash_detection()
    outcomes = []
    for name in stages.NAMES:
        outcome = stage_task(root, name)
        outcomes.append(outcome)
        if outcome["error"]:
            return Failed(message=f"stage '{name}': {outcome['error']}")
        done = stages.stage(name).done
        print(f"  {name:<9} {done if outcome['ran'] else 'unchanged, skipped (DVC cache)'}", flush=True)
        if name == "validate":  # drift is judged before any training time is spent
            drift = drift_task(root, reference_task(root))
            if stop_reason(drift):
                return Failed(message=stop_reason(drift))
            print(f"  {'drift':<9} " + (f"vs {drift['reference']}: {describe_drift(drift)}"
                                        + (" -- DRIFTED (warning)" if drift["drifted"] else "")
                                        if drift["compared"] else drift["why"]), flush=True)
    state = state_task(root)
    comparison = compare_task(root, state)
    verdict = gate_task(root)
    registration = register_task(root, state, verdict)
    schedule = _params(root).schedule
    try:
        with promotion_slot(schedule):  # one promotion at a time; the registry's compare-and-set stays the 2nd guard
            promotion = promote_task(root, registration, verdict, comparison["champion_version"] or
                                     (state["champion"] if state["champion"] == state["existing_version"] else None))
    except AcquireConcurrencySlotTimeoutError:
        promotion = refuse_task(root, registration, verdict,
                                f"refused: no '{PROMOTION_LIMIT}' slot within {schedule.promotion_timeout_seconds} s "
                                f"(another run is promoting, or a killed one left its slot taken: "
                                f"prefect gcl update {PROMOTION_LIMIT} --active-slots 0); "
                                f"v{registration['version']} registered without alias")
    report_task(root, registration, verdict, promotion)
    pushed = push_task(root)
    return {"stages": outcomes, "drift": drift, "gate": verdict, "registration": registration, "promotion": promotion,
            "comparison": comparison, "pushed_files": pushed, "metrics": _read(root, layout.METRICS)}
