"""The monitor flow: score a batch of new finance text with the champion, aggregate per period and
entity, raise negative-share spike alerts, and check prediction drift against the champion's test set.

Wiring only: each task calls one finsent.monitor function and writes its result under ``out_dir``:
scored.parquet (text id, label, probabilities, model version), skipped.parquet (rows not scored, with
the reason), aggregates.csv, alerts.json, prediction_drift.json, monitor_report.md.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from finsent import layout
from finsent.config import load_params
from finsent.monitor.aggregate import aggregate, spikes, spreadsheet_safe
from finsent.monitor.prediction_drift import prediction_drift
from finsent.monitor.score import read_batch, score

NETWORK_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10]}


@task(name="champion", **NETWORK_RETRIES)
def champion_task(root: Path, into: Path) -> dict:
    """The champion's bundle and its test-set predictions (the drift reference)."""
    import mlflow
    from mlflow import MlflowClient

    from finsent.errors import FinsentError
    from finsent.promotion import alias_version
    from finsent.registry import champion_bundle

    registry = load_params(root / "params.yaml").registry
    client = MlflowClient()
    version = alias_version(client, registry.model_name, registry.champion_alias)
    if version is None:
        raise FinsentError(f"no '{registry.champion_alias}' for '{registry.model_name}' yet: run `finsent run` first")
    run_id = client.get_model_version(registry.model_name, version).run_id
    reference = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(into),
                                                    artifact_path=layout.TEST_PREDICTIONS)
    return {"version": version, "bundle": champion_bundle(registry, version, into), "reference": Path(reference)}


@task(name="score")
def score_task(root: Path, source: Path, champion: dict, out: Path) -> dict:
    params = load_params(root / "params.yaml")
    batch = read_batch(source, params.monitor.text_column)
    scored, skipped, figures = score(batch, champion["bundle"], params.monitor.text_column,
                                     params.monitor.batch_size, champion["version"], params.data.normalize)
    scored.to_parquet(out / "scored.parquet", index=False)
    skipped.to_parquet(out / "skipped.parquet", index=False)
    return figures


@task(name="aggregate-and-alert")
def alert_task(root: Path, out: Path) -> list[dict]:
    from finsent.notify import send

    params = load_params(root / "params.yaml")
    judged, alerts = spikes(aggregate(pd.read_parquet(out / "scored.parquet"), params.labels, params.monitor),
                            params.monitor)
    spreadsheet_safe(judged).to_csv(out / "aggregates.csv", index=False)
    (out / "alerts.json").write_text(json.dumps(alerts, indent=2) + "\n")
    for alert in alerts:
        alert["notified"] = send("monitor.alert", f"negative-share spike for {alert['entity']} in period "
                                                  f"{alert['period']}: {alert['share_negative']:.0%} negative "
                                                  f"(trailing {alert['trailing_mean']:.0%})", alert)
    return alerts


@task(name="prediction-drift")
def drift_task(root: Path, champion: dict, out: Path) -> dict:
    params = load_params(root / "params.yaml")
    report = prediction_drift(pd.read_parquet(out / "scored.parquet"), pd.read_parquet(champion["reference"]),
                              params.labels, params.monitor)
    report["retraining"] = trigger_retraining(params) if report["drifted"] and params.monitor.retrain_on_drift \
        else "not requested"
    (out / "prediction_drift.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def trigger_retraining(params) -> str:
    """Start a run of the scheduled retraining deployment (needs the Prefect API that serves it)."""
    from prefect.deployments import run_deployment

    name = f"finsent-training/{params.schedule.deployment_name}"
    try:
        flow_run = run_deployment(name=name, timeout=0)
    except Exception as exc:  # no API, no such deployment: report it, the monitor's own result stands
        return f"could not trigger {name}: {str(exc).splitlines()[0]}"
    return f"triggered {name} (flow run {flow_run.id})"


@task(name="report")
def report_task(out: Path, figures: dict, alerts: list[dict], drift: dict, version: str) -> str:
    lines = [f"# finsent monitor: {figures['rows_scored']} rows scored with champion v{version}", "",
             f"read {figures['rows_read']} = scored {figures['rows_scored']} + skipped {figures['rows_skipped']}; "
             f"{figures['rows_per_second']} rows/s", "", "## Alerts", ""]
    lines += ([f"- **negative-share spike** {a['entity']} {a['period']}: {a['share_negative']:.1%} negative over "
               f"{a['rows']} rows (trailing mean {a['trailing_mean']:.1%}, threshold {a['threshold']:.1%})"
               for a in alerts] or ["none"])
    lines += ["", "## Prediction drift vs the champion's test set", ""]
    lines += [f"- {c['check']}: {c['observed']} (max {c['threshold']}){' **DRIFT**' if c['drifted'] else ''}"
              for c in drift["checks"]]
    lines.append(f"- retraining: {drift['retraining']}")
    report = "\n".join(lines) + "\n"
    (out / "monitor_report.md").write_text(report)
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
    report_task(out, figures, alerts, drift, champion["version"])
    return {"champion": champion["version"], "figures": figures, "alerts": alerts, "drift": drift, "out": str(out)}
