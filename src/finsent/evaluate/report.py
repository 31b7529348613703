"""The evaluation report a reviewer reads: metrics, champion comparison, gate checks, decision."""

from __future__ import annotations


def _row(*cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _slice_table(slices: dict, comparison: dict | None) -> list[str]:
    """Per data source and text length: the candidate's figures, and the champion's on the same rows."""
    if not slices:
        return []
    against = (comparison or {}).get("slices") or {}
    version = (comparison or {}).get("champion_version")
    lines = ["", "## Per slice", "", _row("slice", "rows", "macro-F1", "accuracy",
                                          *([f"champion v{version} macro-F1"] if against else [])),
             _row("---", "---:", "---:", "---:", *(["---:"] if against else []))]
    lines += [_row(name, row["rows"], f"{row['candidate_macro_f1']:.3f}", f"{row['candidate_accuracy']:.3f}",
                   *([f"{against[name]['champion_macro_f1']:.3f}" if name in against else "-"] if against else []))
              for name, row in slices.items()]
    return lines


def evaluation_report(metrics: dict, comparison: dict | None, verdict: dict, labels: list[str],
                      slices: dict | None = None, decision: str | None = None) -> str:
    lines = ["# finsent evaluation report", "",
             f"Test rows: {metrics['test_rows']}. Macro-F1 {metrics['macro_f1']:.4f} "
             f"(95 % bootstrap CI {metrics['macro_f1_ci_low']:.4f} – {metrics['macro_f1_ci_high']:.4f}), "
             f"accuracy {metrics['accuracy']:.4f}, ECE {metrics['ece']:.4f}, Brier {metrics['brier']:.4f}, "
             f"latency p50 {metrics['latency_p50_ms']:.1f} ms / p95 {metrics['latency_p95_ms']:.1f} ms per batch, "
             f"{metrics['throughput_rows_per_s']:.0f} rows/s; "
             f"{metrics['latency_ratio_to_base']:.2f}× the base model's forward time without the adapter.", "",
             "## Per class", "", _row("class", "precision", "recall", "F1", "support"), _row("---", "---:", "---:",
                                                                                          "---:", "---:")]
    lines += [_row(name, f"{metrics[f'precision_{name}']:.3f}", f"{metrics[f'recall_{name}']:.3f}",
                   f"{metrics[f'f1_{name}']:.3f}", metrics[f"support_{name}"]) for name in labels]
    lines += _slice_table(slices or {}, comparison)
    if comparison and comparison.get("champion"):
        champion, paired, test = comparison["champion"], comparison["paired"], comparison["mcnemar"]
        lines += ["", f"## Against champion v{comparison['champion_version']} (same {comparison['rows']} rows)", "",
                  _row("metric", "candidate", "champion"), _row("---", "---:", "---:")]
        lines += [_row(key, f"{metrics[key]:.4f}", f"{champion[key]:.4f}")
                  for key in ["macro_f1", "accuracy", *[f"recall_{name}" for name in labels]]]
        lines += ["", f"Paired bootstrap: macro-F1 difference {paired['macro_f1_diff']:+.4f} "
                      f"(95 % CI {paired['macro_f1_diff_ci_low']:+.4f} – {paired['macro_f1_diff_ci_high']:+.4f}), "
                      f"p(not better) = {paired['p_value_not_better']:.3f}. McNemar: candidate-only correct "
                      f"{test['candidate_only_correct']}, champion-only correct {test['champion_only_correct']}, "
                      f"p = {test['mcnemar_p_value']:.3f}."]
    else:
        lines += ["", "No champion to compare with: only the absolute gates apply."]
    lines += ["", f"## Gates: {'PASSED' if verdict['passed'] else 'FAILED'}", "",
              _row("gate", "metric", "observed", "threshold", "kind", "result"),
              _row("---", "---", "---:", "---:", "---", "---")]
    lines += [_row(c["gate"], c["metric"], f"{c['observed']:.4f}", f"{c['threshold']:.4f}", c["kind"],
                   "pass" if c["passed"] else "**FAIL**") for c in verdict["checks"]]
    if decision:
        lines += ["", "## Decision", "", decision]
    return "\n".join(lines) + "\n"
