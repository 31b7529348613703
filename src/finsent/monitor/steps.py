"""The monitor's steps: score a batch with the champion, aggregate and alert, check prediction drift, report.

Plain functions with explicit inputs and outputs (each writes its files under ``out``); the monitor flow
(pipelines/monitor.py) only calls them in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finsent import layout
from finsent.config import Params
from finsent.errors import FinsentError


@dataclass(frozen=True)
class Champion:
    version: str
    bundle: Path  # the verified bundle folder
    reference: Path  # its test-set predictions: what prediction drift is measured against


def load_champion(params: Params, into: Path) -> Champion:
    """The champion's verified bundle and its test-set predictions, downloaded into ``into``."""
    import mlflow
    from mlflow import MlflowClient

    from finsent.promotion import alias_version
    from finsent.registry import champion_bundle

    registry = params.registry
    client = MlflowClient()
    version = alias_version(client, registry.model_name, registry.champion_alias)
    if version is None:
        raise FinsentError(f"no '{registry.champion_alias}' for '{registry.model_name}' yet: run `finsent run` first")
    run_id = client.get_model_version(registry.model_name, version).run_id
    reference = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(into),
                                                    artifact_path=layout.TEST_PREDICTIONS)
    return Champion(version, champion_bundle(registry, version, into), Path(reference))


def score_batch(params: Params, source: Path, champion: Champion, out: Path) -> dict:
    """Score ``source`` -> scored.parquet and skipped.parquet (every row not scored, with why); -> the counts."""
    from finsent.monitor.score import read_batch, score

    batch = read_batch(source, params.monitor.text_column)
    scored, skipped, figures = score(batch, champion.bundle, params.monitor.text_column, params.monitor.batch_size,
                                     champion.version, params.data.normalize)
    scored.to_parquet(out / "scored.parquet", index=False)
    skipped.to_parquet(out / "skipped.parquet", index=False)
    return figures


def raise_alerts(params: Params, out: Path) -> list[dict]:
    """Aggregate the scored rows per period and entity -> aggregates.csv; negative-share spikes -> alerts.json,
    each sent as a notice."""
    from finsent.monitor.aggregate import aggregate, spikes, spreadsheet_safe
    from finsent.notify import send

    judged, alerts = spikes(aggregate(pd.read_parquet(out / "scored.parquet"), params.labels, params.monitor),
                            params.monitor)
    spreadsheet_safe(judged).to_csv(out / "aggregates.csv", index=False)
    (out / "alerts.json").write_text(json.dumps(alerts, indent=2) + "\n")
    for alert in alerts:
        alert["notified"] = send("monitor.alert", f"negative-share spike for {alert['entity']} in period "
                                                  f"{alert['period']}: {alert['share_negative']:.0%} negative "
                                                  f"(trailing {alert['trailing_mean']:.0%})", alert)
    return alerts


def check_prediction_drift(params: Params, champion: Champion, out: Path) -> dict:
    """Label shares and confidence of this batch vs the champion's test set -> prediction_drift.json; on drift,
    retraining is triggered when ``monitor.retrain_on_drift`` asks for it."""
    from finsent.monitor.prediction_drift import prediction_drift

    report = prediction_drift(pd.read_parquet(out / "scored.parquet"), pd.read_parquet(champion.reference),
                              params.labels, params.monitor)
    report["retraining"] = trigger_retraining(params) if report["drifted"] and params.monitor.retrain_on_drift \
        else "not requested"
    (out / "prediction_drift.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def trigger_retraining(params: Params) -> str:
    """Start a run of the scheduled retraining deployment (needs the Prefect API that serves it)."""
    from prefect.deployments import run_deployment

    name = f"finsent-training/{params.schedule.deployment_name}"
    try:
        flow_run = run_deployment(name=name, timeout=0)
    except Exception as exc:  # no API, no such deployment: report it, the monitor's own result stands
        return f"could not trigger {name}: {str(exc).splitlines()[0]}"
    return f"triggered {name} (flow run {flow_run.id})"


def write_report(out: Path, figures: dict, alerts: list[dict], drift: dict, version: str) -> str:
    """monitor_report.md: the accounting, the alerts and the prediction-drift checks -> its text."""
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
    return report
