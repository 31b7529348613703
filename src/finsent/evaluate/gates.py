"""Gate: the rules a candidate must pass before it may become champion.

Absolute gates (floors and ceilings on the candidate's own metrics) are checked with MLflow's
model-validation API (``mlflow.validate_evaluation_results`` with ``MetricThreshold``). MLflow has
no "not worse than the champion by more than a tolerance" rule nor significance tests, so the
relative gates are written here, on the paired comparison of both models on the same test rows.
Every check reports its observed value and threshold, so a refusal explains itself.
"""

from __future__ import annotations

import json
from pathlib import Path

from finsent.config import GateParams


def _mlflow_threshold_passes(metric: str, observed: float, threshold: float, greater_is_better: bool) -> bool:
    import mlflow
    from mlflow.models import MetricThreshold
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    try:
        mlflow.validate_evaluation_results(
            {metric: MetricThreshold(threshold=threshold, greater_is_better=greater_is_better)},
            EvaluationResult(metrics={metric: observed}, artifacts={}))
    except ModelValidationFailedException:
        return False
    return True


def absolute_gates(metrics: dict, params: GateParams, labels: list[str]) -> list[dict]:
    rules = [("min_macro_f1", "macro_f1", params.min_macro_f1, True),
             ("min_accuracy", "accuracy", params.min_accuracy, True),
             *[("min_class_recall", f"recall_{name}", params.min_class_recall, True) for name in labels],
             ("max_ece", "ece", params.max_ece, False),
             ("max_latency_ratio", "latency_ratio_to_base", params.max_latency_ratio, False),
             ("max_latency_p95_ms", "latency_p95_ms", params.max_latency_p95_ms, False)]
    return [{"gate": gate, "metric": metric, "observed": float(metrics[metric]), "threshold": threshold,
             "kind": "absolute", "passed": _mlflow_threshold_passes(metric, float(metrics[metric]), threshold, higher)}
            for gate, metric, threshold, higher in rules if threshold is not None]


def relative_gates(metrics: dict, comparison: dict, params: GateParams, labels: list[str]) -> list[dict]:
    champion = comparison["champion"]
    version = comparison["champion_version"]
    checks = [{"gate": "max_macro_f1_drop", "metric": "macro_f1", "observed": metrics["macro_f1"],
               "threshold": champion["macro_f1"] - params.max_macro_f1_drop, "kind": f"vs champion v{version}"}]
    checks += [{"gate": "max_class_recall_drop", "metric": f"recall_{name}", "observed": metrics[f"recall_{name}"],
                "threshold": champion[f"recall_{name}"] - params.max_class_recall_drop,
                "kind": f"vs champion v{version}"} for name in labels]
    if params.max_slice_macro_f1_drop is not None:
        checks += [{"gate": "max_slice_macro_f1_drop", "metric": f"macro_f1[{name}]",
                    "observed": figures["candidate_macro_f1"],
                    "threshold": figures["champion_macro_f1"] - params.max_slice_macro_f1_drop,
                    "kind": f"vs champion v{version}, {figures['rows']} rows"}
                   for name, figures in comparison.get("slices", {}).items() if figures["rows"] >= params.min_slice_rows]
    for check in checks:
        check["passed"] = check["observed"] >= check["threshold"] - 1e-12
    if params.require_significant_improvement:
        p_value = comparison["paired"]["p_value_not_better"]
        checks.append({"gate": "max_p_value", "metric": "p_value_not_better", "observed": p_value,
                       "threshold": params.max_p_value, "kind": f"vs champion v{version}",
                       "passed": p_value <= params.max_p_value})
    return checks


def check_gates(metrics: dict, params: GateParams, labels: list[str], comparison: dict | None = None) -> dict:
    checks = absolute_gates(metrics, params, labels)
    against = comparison.get("champion_version") if comparison else None
    if against is not None:
        checks += relative_gates(metrics, comparison, params, labels)
    return {"passed": all(c["passed"] for c in checks), "compared_with_champion": against, "checks": checks}


def gate(metrics_path: Path, comparison_path: Path | None, params: GateParams, labels: list[str], out: Path) -> dict:
    comparison = json.loads(comparison_path.read_text()) if comparison_path and comparison_path.is_file() else None
    verdict = check_gates(json.loads(Path(metrics_path).read_text()), params, labels, comparison)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(verdict, indent=2))
    return verdict


def describe(verdict: dict, failed_only: bool = False) -> str:
    def symbol(check: dict) -> str:
        higher = not check["gate"].startswith("max_") or check["gate"].endswith("_drop")
        return (">=" if check["passed"] else "<") if higher else ("<=" if check["passed"] else ">")

    return "; ".join(f"{c['metric']} {c['observed']:.3f} {symbol(c)} {c['threshold']:.3f}"
                     + ("" if c["kind"] == "absolute" else f" ({c['kind']})")
                     for c in verdict["checks"] if not (failed_only and c["passed"]))
