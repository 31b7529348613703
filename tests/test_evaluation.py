"""Calibration, resampling statistics, gates and the evaluation report, on numbers built in the test."""

import numpy as np
import pytest

from finsent.config import GateParams
from finsent.evaluate.calibration import brier_score, expected_calibration_error, reliability_bins
from finsent.evaluate.gates import check_gates, describe
from finsent.evaluate.report import evaluation_report
from finsent.evaluate.statistics import bootstrap_macro_f1_ci, macro_f1_per_row, mcnemar, paired_bootstrap

LABELS = ["negative", "neutral", "positive"]


def _metrics(macro_f1=0.8, recalls=(0.7, 0.9, 0.8), ece=0.05, latency=100.0, ratio=1.4):
    metrics = {"macro_f1": macro_f1, "accuracy": 0.85, "ece": ece, "brier": 0.2, "latency_p50_ms": latency / 2,
               "latency_p95_ms": latency, "throughput_rows_per_s": 300.0, "test_rows": 100,
               "latency_ratio_to_base": ratio,
               "macro_f1_ci_low": macro_f1 - 0.05, "macro_f1_ci_high": macro_f1 + 0.05}
    for name, recall in zip(LABELS, recalls):
        metrics.update({f"recall_{name}": recall, f"precision_{name}": 0.8, f"f1_{name}": 0.8, f"support_{name}": 30})
    return metrics


def test_calibration_of_confident_correct_and_overconfident_models():
    y_true = np.array([0, 1, 2, 0])
    perfect = np.eye(3)[y_true]
    assert expected_calibration_error(reliability_bins(perfect, y_true)) == pytest.approx(0.0)
    assert brier_score(perfect, y_true) == pytest.approx(0.0)
    wrong = np.eye(3)[[1, 2, 0, 1]] * 0.9 + 0.1 / 3
    assert expected_calibration_error(reliability_bins(wrong, y_true)) == pytest.approx(0.9 + 0.1 / 3)
    assert brier_score(wrong, y_true) > 1.0


def test_paired_statistics_see_a_real_difference_and_no_difference():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 400)
    good = np.where(rng.random(400) < 0.9, y_true, (y_true + 1) % 3)
    bad = np.where(rng.random(400) < 0.6, y_true, (y_true + 1) % 3)
    better = paired_bootstrap(y_true, good, bad, 3, resamples=300)
    assert better["macro_f1_diff"] > 0.2 and better["p_value_not_better"] == 0.0
    assert better["macro_f1_diff_ci_low"] > 0
    assert mcnemar(y_true, good, bad)["mcnemar_p_value"] < 1e-6
    same = mcnemar(y_true, good, good)
    assert same == {"candidate_only_correct": 0, "champion_only_correct": 0, "mcnemar_p_value": 1.0}
    low, high = bootstrap_macro_f1_ci(y_true, good, 3, resamples=300)
    assert low < 0.9 < high or low < high < 0.95


def test_macro_f1_of_many_resamples_at_once_is_sklearns_per_resample():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 4, (60, 9))
    y_pred = np.where(rng.random((60, 9)) < 0.6, y_true, rng.integers(0, 4, (60, 9)))
    y_true[0], y_pred[0] = 0, 0  # three of four labels absent from truth and prediction: F1 0 each
    y_true[1], y_pred[1] = 1, 2  # every prediction wrong
    expected = [f1_score(t, p, labels=[0, 1, 2, 3], average="macro", zero_division=0) for t, p in zip(y_true, y_pred)]
    assert macro_f1_per_row(y_true, y_pred, 4) == pytest.approx(expected, abs=1e-12)
    assert expected[0] == 0.25 and expected[1] == 0.0


def test_first_model_faces_only_absolute_gates():
    verdict = check_gates(_metrics(), GateParams(), LABELS, comparison={"champion_version": None})
    assert verdict["passed"] and verdict["compared_with_champion"] is None
    assert {c["gate"] for c in verdict["checks"]} == {"min_macro_f1", "min_accuracy", "min_class_recall", "max_ece",
                                                      "max_latency_ratio"}
    assert all(c["kind"] == "absolute" for c in verdict["checks"])


def test_absolute_gates_fail_with_observed_value_and_threshold():
    verdict = check_gates(_metrics(recalls=(0.1, 0.9, 0.8), ece=0.4, latency=9000, ratio=3.5),
                          GateParams(max_latency_p95_ms=5000), LABELS)
    failed = {(c["gate"], c["metric"]) for c in verdict["checks"] if not c["passed"]}
    assert failed == {("min_class_recall", "recall_negative"), ("max_ece", "ece"),
                      ("max_latency_ratio", "latency_ratio_to_base"), ("max_latency_p95_ms", "latency_p95_ms")}
    assert "recall_negative 0.100 < 0.300" in describe(verdict, failed_only=True)
    assert "ece 0.400 > 0.200" in describe(verdict, failed_only=True)


def test_worse_than_champion_fails_the_relative_gate_with_a_readable_reason():
    comparison = {"champion_version": "3", "champion": _metrics(macro_f1=0.85, recalls=(0.8, 0.9, 0.85)),
                  "paired": {"p_value_not_better": 0.9}}
    verdict = check_gates(_metrics(macro_f1=0.80, recalls=(0.70, 0.9, 0.85)), GateParams(), LABELS, comparison)
    assert not verdict["passed"] and verdict["compared_with_champion"] == "3"
    reason = describe(verdict, failed_only=True)
    assert "macro_f1 0.800 < 0.840 (vs champion v3)" in reason
    assert "recall_negative 0.700 < 0.750 (vs champion v3)" in reason


def test_significance_gate_is_optional():
    comparison = {"champion_version": "1", "champion": _metrics(macro_f1=0.80),
                  "paired": {"p_value_not_better": 0.2}}
    assert check_gates(_metrics(macro_f1=0.81), GateParams(), LABELS, comparison)["passed"]
    strict = check_gates(_metrics(macro_f1=0.81), GateParams(require_significant_improvement=True), LABELS, comparison)
    assert not strict["passed"] and "p_value_not_better 0.200 > 0.050" in describe(strict, failed_only=True)


def test_disabled_gate_is_skipped():
    verdict = check_gates(_metrics(latency=1e9), GateParams(max_latency_p95_ms=None), LABELS)
    assert verdict["passed"] and "max_latency_p95_ms" not in {c["gate"] for c in verdict["checks"]}


def test_report_lists_every_gate_and_the_decision():
    comparison = {"champion_version": "2", "rows": 100, "champion": _metrics(macro_f1=0.7),
                  "paired": {"macro_f1_diff": 0.1, "macro_f1_diff_ci_low": 0.02, "macro_f1_diff_ci_high": 0.18,
                             "p_value_not_better": 0.01},
                  "mcnemar": {"candidate_only_correct": 12, "champion_only_correct": 3, "mcnemar_p_value": 0.035}}
    verdict = check_gates(_metrics(), GateParams(), LABELS, comparison)
    report = evaluation_report(_metrics(), comparison, verdict, LABELS, decision="promoted v5 to champion")
    assert "## Against champion v2 (same 100 rows)" in report and "McNemar" in report
    assert report.count("| pass |") == len(verdict["checks"])
    assert report.rstrip().endswith("promoted v5 to champion")


def test_a_candidate_worse_on_one_source_fails_that_slice_gate_only():
    """Two sources; the candidate's predictions on one of them carry label noise this test injects: the slice gate
    of that source fails, the other source's passes, a slice smaller than min_slice_rows is reported, not gated."""
    import pandas as pd

    from finsent.evaluate.slices import slice_figures

    rng = np.random.default_rng(0)
    rows = 400
    truth = rng.choice(LABELS, rows)
    test = pd.DataFrame({"id": range(rows), "label": truth,
                         "source": ["wire.csv"] * 200 + ["blogs.csv"] * 200,
                         "text": ["short text"] * 390 + ["a much longer sentence " * 8] * 10})
    champion = pd.Series(truth)
    candidate = champion.copy()
    noisy = rng.choice(np.arange(200, 400), 60, replace=False)  # 30 % of blogs.csv relabelled at random
    candidate[noisy] = [LABELS[(LABELS.index(label) + 1) % 3] for label in candidate[noisy]]
    slices = slice_figures(test, {"candidate": candidate, "champion": champion}, ("source", "length"))
    assert slices["source=blogs.csv"]["rows"] == 200 and slices["source=blogs.csv"]["champion_macro_f1"] == 1.0
    assert slices["source=wire.csv"]["candidate_macro_f1"] == 1.0 > slices["source=blogs.csv"]["candidate_macro_f1"]
    comparison = {"champion_version": "4", "rows": rows, "champion": _metrics(macro_f1=0.8), "slices": slices,
                  "paired": {"macro_f1_diff": 0.0, "macro_f1_diff_ci_low": -0.02, "macro_f1_diff_ci_high": 0.02,
                             "p_value_not_better": 0.5},
                  "mcnemar": {"candidate_only_correct": 0, "champion_only_correct": 60, "mcnemar_p_value": 0.0}}
    verdict = check_gates(_metrics(macro_f1=0.8), GateParams(min_slice_rows=50), LABELS, comparison)
    judged = {c["metric"]: c["passed"] for c in verdict["checks"] if c["gate"] == "max_slice_macro_f1_drop"}
    assert judged == {"macro_f1[source=blogs.csv]": False, "macro_f1[source=wire.csv]": True,
                      "macro_f1[length=1-12 words]": False}
    assert not verdict["passed"]
    assert "macro_f1[source=blogs.csv]" in describe(verdict, failed_only=True)
    assert "vs champion v4, 200 rows" in describe(verdict, failed_only=True)
    report = evaluation_report(_metrics(), comparison, verdict, LABELS,
                               {name: {k: v for k, v in row.items() if not k.startswith("champion")}
                                for name, row in slices.items()})
    assert "## Per slice" in report and "| length=25+ words | 10 |" in report
    assert check_gates(_metrics(macro_f1=0.8), GateParams(max_slice_macro_f1_drop=None), LABELS, comparison)["passed"]
