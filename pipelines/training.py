"""The training flow: DVC stages as Prefect tasks, then gate -> register/promote -> dvc push.

Stages run through DVC (cached, hashed into dvc.lock); gate and registry steps have side effects
on the model registry, so they are tasks here and not DVC stages.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow, task
from prefect.states import Failed

from finsent import layout
from finsent.config import load_params
from finsent.evaluate.gates import gate
from finsent.registry import register_and_promote
from finsent.versioning import code_revision, lock_text, push, reproduce_stage


@task(name="stage", task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def stage_task(root: Path, stage: str) -> dict:
    return reproduce_stage(root, stage)


@task(name="gate")
def gate_task(root: Path) -> dict:
    return gate(root / layout.METRICS, load_params(root / "params.yaml").gate, root / layout.GATE_REPORT)


@task(name="register", retries=2, retry_delay_seconds=5)
def register_task(root: Path, verdict: dict) -> dict:
    params = load_params(root / "params.yaml")
    train = json.loads((root / layout.TRAIN_REPORT).read_text())
    lineage = {"code": code_revision(root), "dvc_lock": lock_text(root), "base_model": train["base_model"],
               "validation": json.loads((root / layout.VALIDATION_REPORT).read_text())["accounting"],
               "gate": verdict}
    return register_and_promote(root, params, verdict, lineage)


@task(name="dvc-push", retries=2, retry_delay_seconds=5)
def push_task(root: Path) -> int:
    return push(root)


@flow(name="finsent-training")
def training_flow(project_dir: str) -> dict:
    root = Path(project_dir)
    stages = []
    for name in layout.STAGES:
        outcome = stage_task(root, name)
        stages.append(outcome)
        if outcome["error"]:
            return Failed(message=f"stage '{name}': {outcome['error']}")
        print(f"  {name:<9} {'done' if outcome['ran'] else 'unchanged, skipped (DVC cache)'}", flush=True)
    verdict = gate_task(root)
    registration = register_task(root, verdict)
    pushed = push_task(root)
    return {"stages": stages, "gate": verdict, "registration": registration, "pushed_files": pushed,
            "metrics": json.loads((root / layout.METRICS).read_text())}
