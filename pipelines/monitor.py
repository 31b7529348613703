"""The monitor flow: score a batch of new finance text with the champion, aggregate per period and
entity, raise negative-share spike alerts, and check prediction drift against the champion's test set.

Wiring only: each task calls one step of finsent.monitor.steps, which writes its result under ``out_dir``:
scored.parquet (text id, label, probabilities, model version), skipped.parquet (rows not scored, with
the reason), aggregates.csv, alerts.json, prediction_drift.json, monitor_report.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from finsent.config import load_params
from finsent.monitor.steps import (Champion, check_prediction_drift, load_champion, raise_alerts, score_batch,
                                   write_report)

NETWORK_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


def _params(root: Path):
    return load_params(root / "params.yaml")


@task(name="champion", **NETWORK_RETRIES)
def champion_task(root: Path, into: Path) -> Champion:
    return load_champion(_params(root), into)


@task(name="score")
def score_task(root: Path, source: Path, champion: Champion, out: Path) -> dict:
    return score_batch(_params(root), source, champion, out)


@task(name="aggregate-and-alert")
def alert_task(root: Path, out: Path) -> list[dict]:
    return raise_alerts(_params(root), out)


@task(name="prediction-drift")
def drift_task(root: Path, champion: Champion, out: Path) -> dict:
    return check_prediction_drift(_params(root), champion, out)


@task(name="report")
def report_task(out: Path, figures: dict, alerts: list[dict], drift: dict, version: str) -> str:
    report = write_report(out, figures, alerts, drift, version)
    create_markdown_artifact(markdown=report, key="finsent-monitor", description=f"champion v{version}")
    return report


@flow(name="finsent-monitor")
def monitor_flow(project_dir: str, source: str, out_dir: str) -> dict:
    root, out = Path(project_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        champion = champion_task(root, Path(scratch))
        figures = score_task(root, Path(source), champion, out)
        drift = drift_task(root, champion, out)
    alerts = alert_task(root, out)
    report_task(out, figures, alerts, drift, champion.version)
    return {"champion": champion.version, "figures": figures, "alerts": alerts, "drift": drift, "out": str(out)}
