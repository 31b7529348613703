"""The monitor's steps: score a batch with the champion (and the challenger in its shadow), aggregate and alert,
check prediction drift, report, log to MLflow.

Plain functions with explicit inputs and outputs (each writes its files under ``out``); the monitor flow
(pipelines/monitor.py) only calls them in order.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from finsent import layout
from finsent.config import Params
from finsent.errors import FinsentError


@dataclass(frozen=True)
class AliasedModel:
    alias: str  # champion, or challenger (shadow scoring)
    version: str
    bundle: Path  # the verified bundle folder
    reference: Path  # its test-set predictions: what prediction drift is measured against


def load_aliased(params: Params, alias: str, into: Path) -> AliasedModel | None:
    """The verified bundle and test-set predictions of the version holding ``alias``, downloaded into
    ``into`` (a folder per alias); None when no version holds it."""
    import mlflow
    from mlflow import MlflowClient

    from finsent.promotion import alias_version
    from finsent.registry import champion_bundle

    registry = params.registry
    client = MlflowClient()
    version = alias_version(client, registry.model_name, alias)
    if version is None:
        return None
    folder = into / alias
    folder.mkdir(parents=True, exist_ok=True)
    run_id = client.get_model_version(registry.model_name, version).run_id
    reference = mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(folder),
                                                    artifact_path=layout.TEST_PREDICTIONS)
    return AliasedModel(alias, version, champion_bundle(registry, version, folder), Path(reference))


def load_champion(params: Params, into: Path) -> AliasedModel:
    champion = load_aliased(params, params.registry.champion_alias, into)
    if champion is None:
        raise FinsentError(f"no '{params.registry.champion_alias}' for '{params.registry.model_name}' yet: "
                           f"run `finsent run` first")
    return champion


def score_batch(params: Params, source: Path, champion: AliasedModel, out: Path) -> dict:
    """Score ``source`` -> scored.parquet and skipped.parquet (every row not scored, with why); -> the counts."""
    from finsent.monitor.score import read_batch, score

    batch = read_batch(source, params.monitor.text_column)
    scored, skipped, figures = score(batch, champion.bundle, params.monitor.text_column, params.monitor.batch_size,
                                     champion.version, params.data.normalize)
    scored.to_parquet(out / "scored.parquet", index=False)
    skipped.to_parquet(out / "skipped.parquet", index=False)
    return figures


def shadow_score(params: Params, source: Path, challenger: AliasedModel, out: Path) -> dict:
    """The challenger scores the same batch (shadow_scored.parquet) and is compared with the champion's scores:
    shadow.json, shadow_disagreements.csv; agreement below ``monitor.shadow_min_agreement`` is a notice."""
    from finsent.monitor.aggregate import spreadsheet_safe
    from finsent.monitor.score import read_batch, score
    from finsent.monitor.shadow import compare_shadow
    from finsent.notify import send

    monitor = params.monitor
    shadow, _, _ = score(read_batch(source, monitor.text_column), challenger.bundle, monitor.text_column,
                         monitor.batch_size, challenger.version, params.data.normalize)
    shadow.to_parquet(out / "shadow_scored.parquet", index=False)
    report, disagreements = compare_shadow(pd.read_parquet(out / "scored.parquet"), shadow, params.labels, monitor)
    spreadsheet_safe(disagreements).to_csv(out / "shadow_disagreements.csv", index=False)
    if report["below_min_agreement"]:
        report["notified"] = send("monitor.shadow", f"challenger v{challenger.version} agrees with the champion on "
                                                    f"{report['agreement']:.1%} of {report['rows']} rows (min "
                                                    f"{monitor.shadow_min_agreement:.0%})",
                                  {k: v for k, v in report.items() if k != "top_disagreements"})
    (out / "shadow.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


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


def check_prediction_drift(params: Params, champion: AliasedModel, out: Path) -> dict:
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


def _shadow_lines(shadow: dict | None) -> list[str]:
    if shadow is None:
        return ["", "## Shadow scoring", "", "no challenger: nothing awaits approval"]
    lines = ["", f"## Shadow scoring: challenger v{shadow['challenger_version']} on the same rows", "",
             f"Agreement with the champion: {shadow['agreement']:.1%} of {shadow['rows']} rows (minimum "
             f"{shadow['min_agreement']:.0%}){' **BELOW MINIMUM**' if shadow['below_min_agreement'] else ''}.", "",
             "| label | champion share | challenger share | difference |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {name} | {s['champion']:.1%} | {s['challenger']:.1%} | {s['difference']:+.1%} |"
              for name, s in shadow["shares"].items()]
    if len(shadow["periods"]) > 1:
        lines += ["", "| period | rows | agreement | " + " | ".join(f"Δ {name}" for name in shadow["shares"]) + " |",
                  "| --- | ---: | ---: |" + " ---: |" * len(shadow["shares"])]
        lines += [f"| {p['period']} | {p['rows']} | {p['agreement']:.1%} | "
                  + " | ".join(f"{s['difference']:+.1%}" for s in p["shares"].values()) + " |"
                  for p in shadow["periods"]]
    if shadow["top_disagreements"]:
        lines += ["", f"Where they disagree most ({shadow['disagreements']} rows in shadow_disagreements.csv):", "",
                  "| text | champion | challenger |", "| --- | --- | --- |"]
        lines += [f"| {str(d['text'])[:160].replace('|', '/')} | {d['champion_label']} ({d['champion_confidence']:.2f}) "
                  f"| {d['challenger_label']} ({d['challenger_confidence']:.2f}) |" for d in shadow["top_disagreements"]]
    return lines


def write_report(out: Path, figures: dict, alerts: list[dict], drift: dict, version: str,
                 shadow: dict | None = None) -> str:
    """monitor_report.md: the accounting, the alerts, the prediction-drift checks and the shadow scoring ->
    its text."""
    lines = [f"# finsent monitor: {figures['rows_scored']} rows scored with champion v{version}", "",
             f"read {figures['rows_read']} = scored {figures['rows_scored']} + skipped {figures['rows_skipped']}; "
             f"{figures['rows_per_second']} rows/s on {figures['backend']}", ""]
    if figures.get("backend_note"):
        lines += [f"**Note**: {figures['backend_note']}", ""]
    lines += ["## Alerts", ""]
    lines += ([f"- **negative-share spike** {a['entity']} {a['period']}: {a['share_negative']:.1%} negative over "
               f"{a['rows']} rows (trailing mean {a['trailing_mean']:.1%}, threshold {a['threshold']:.1%})"
               for a in alerts] or ["none"])
    lines += ["", "## Prediction drift vs the champion's test set", ""]
    lines += [f"- {c['check']}: {c['observed']} (max {c['threshold']}){' **DRIFT**' if c['drifted'] else ''}"
              for c in drift["checks"]]
    lines.append(f"- retraining: {drift['retraining']}")
    lines += _shadow_lines(shadow)
    report = "\n".join(lines) + "\n"
    (out / "monitor_report.md").write_text(report)
    return report


def log_monitor_run(root: Path, params: Params, source: Path, out: Path, figures: dict, alerts: list[dict],
                    drift: dict, version: str, shadow: dict | None) -> str:
    """The monitor's figures and files as an MLflow run in experiment '<registry.experiment>-monitor' (apart from
    the training runs it would otherwise crowd), the report as its description -> the run id."""
    import mlflow
    from mlflow import MlflowClient

    from finsent.mlflow_limits import TAG_LIMIT, fitted
    from finsent.runtime import project_experiment_id

    client = MlflowClient()
    experiment = project_experiment_id(client, f"{params.registry.experiment}-monitor", root)
    name = f"monitor · {source.name} · champion v{version}" + (
        f" vs challenger v{shadow['challenger_version']}" if shadow else "")
    note = fitted((out / "monitor_report.md").read_text(), TAG_LIMIT, "this run's artifact monitor_report.md")
    run = client.create_run(experiment, run_name=name, tags={
        "finsent.kind": "monitor", "champion_version": version, "mlflow.note.content": note,
        "serving_backend": figures["backend"],
        **({"serving_backend_note": figures["backend_note"]} if figures.get("backend_note") else {}),
        **({"challenger_version": shadow["challenger_version"]} if shadow else {})})
    metrics = {**{k: float(figures[k]) for k in ("rows_read", "rows_scored", "rows_skipped", "rows_per_second")},
               "alerts": float(len(alerts)),
               **{f"drift_{c['check']}": float(c["observed"]) for c in drift["checks"]
                  if isinstance(c["observed"], (int, float))}}
    if shadow:
        metrics["shadow_agreement"] = shadow["agreement"]
        metrics.update({f"shadow_share_difference_{name}": s["difference"] for name, s in shadow["shares"].items()})
    now = int(time.time() * 1000)
    client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(k, v, now, 0) for k, v in metrics.items()])
    for file in ("monitor_report.md", "alerts.json", "prediction_drift.json", "shadow.json",
                 "shadow_disagreements.csv"):
        if (out / file).is_file():
            client.log_artifact(run.info.run_id, str(out / file))
    client.set_terminated(run.info.run_id)
    return run.info.run_id
