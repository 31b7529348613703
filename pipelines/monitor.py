"""The monitor flow: score a batch of new finance text with the champion, aggregate per period and
entity, raise negative-share spike alerts, check prediction drift against the champion's test set, and, when a
challenger awaits approval, score the batch with it too (shadow) and compare.

Wiring only: each task calls one step of finsent.monitor.steps, which writes its result under ``out_dir``:
scored.parquet (text id, label, probabilities, model version), skipped.parquet (rows not scored, with
the reason), aggregates.csv, alerts.json, prediction_drift.json, shadow.json + shadow_disagreements.csv (with a
challenger), monitor_report.md; the figures and files are also logged as an MLflow run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from finsent.config import load_params
from finsent.runtime import echo_run_lines
from finsent.monitor.steps import (AliasedModel, check_prediction_drift, load_aliased, load_champion,
                                   log_monitor_run, raise_alerts, score_batch, shadow_score, write_report)

NETWORK_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


def _params(root: Path):
    return load_params(root / "params.yaml")


@task(name="champion", **NETWORK_RETRIES)
def champion_task(root: Path, into: Path) -> AliasedModel:
    return load_champion(_params(root), into)


@task(name="challenger", **NETWORK_RETRIES)
def challenger_task(root: Path, into: Path) -> AliasedModel | None:
    params = _params(root)
    return load_aliased(params, params.registry.challenger_alias, into)


@task(name="shadow-score")
def shadow_task(root: Path, source: Path, challenger: AliasedModel, out: Path) -> dict:
    return shadow_score(_params(root), source, challenger, out)


@task(name="score")
def score_task(root: Path, source: Path, champion: AliasedModel, out: Path) -> dict:
    return score_batch(_params(root), source, champion, out)


@task(name="aggregate-and-alert")
def alert_task(root: Path, out: Path) -> list[dict]:
    return raise_alerts(_params(root), out)


@task(name="prediction-drift")
def drift_task(root: Path, champion: AliasedModel, out: Path) -> dict:
    return check_prediction_drift(_params(root), champion, out)


@task(name="report")
def report_task(out: Path, figures: dict, alerts: list[dict], drift: dict, version: str, shadow: dict | None) -> str:
    report = write_report(out, figures, alerts, drift, version, shadow)
    create_markdown_artifact(markdown=report, key="finsent-monitor", description=f"champion v{version}")
    return report


@task(name="log-to-mlflow", **NETWORK_RETRIES)
def log_task(root: Path, source: Path, out: Path, figures: dict, alerts: list[dict], drift: dict, version: str,
             shadow: dict | None) -> str:
    return log_monitor_run(root, _params(root), source, out, figures, alerts, drift, version, shadow)


@flow(name="finsent-monitor", log_prints=True)
def monitor_flow(project_dir: str, source: str, out_dir: str) -> dict:
    root, out, batch = Path(project_dir), Path(out_dir), Path(source)
    echo_run_lines()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        champion = champion_task(root, Path(scratch))
        figures = score_task(root, batch, champion, out)
        drift = drift_task(root, champion, out)
        challenger = challenger_task(root, Path(scratch))
        shadow = shadow_task(root, batch, challenger, out) if challenger is not None else None
    alerts = alert_task(root, out)
    report_task(out, figures, alerts, drift, champion.version, shadow)
    run_id = log_task(root, batch, out, figures, alerts, drift, champion.version, shadow)
    return {"champion": champion.version, "figures": figures, "alerts": alerts, "drift": drift, "shadow": shadow,
            "mlflow_run_id": run_id, "out": str(out)}
