"""Evaluate stage: score the adapter bundle on the held-out test split.

Writes metrics.json (accuracy, macro-F1 with a bootstrap 95 % CI, per-class precision/recall/F1
as flat scalars, ECE, Brier score, per-batch latency p50/p95 and throughput, and the latency ratio to the
base model without the adapter), the confusion
matrix (JSON + PNG), the reliability diagram (PNG), the figures per slice (slices.json: per data source and text
length) and the per-row test predictions, which the champion comparison and later audits reuse.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from finsent.base_model import verified_base_path
from finsent.bundle import load_bundle, predict_proba
from finsent.config import EvalParams
from finsent.evaluate import files
from finsent.evaluate.calibration import brier_score, expected_calibration_error, plot_reliability, reliability_bins
from finsent.evaluate.slices import slice_figures
from finsent.evaluate.statistics import bootstrap_macro_f1_ci
from finsent.train.methods import load_base_classifier


def classification_metrics(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    metrics = {"accuracy": float(accuracy_score(y_true, y_pred)),
               "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
               "test_rows": len(y_true)}
    for i, name in enumerate(labels):
        metrics.update({f"precision_{name}": float(precision[i]), f"recall_{name}": float(recall[i]),
                        f"f1_{name}": float(f1[i]), f"support_{name}": int(support[i])})
    return metrics


def plot_confusion(matrix: np.ndarray, labels: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.imshow(matrix, cmap="Blues")
    axes.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels, yticklabels=labels,
             xlabel="predicted", ylabel="true", title="Confusion matrix (test)")
    for (row, col), count in np.ndenumerate(matrix):
        axes.text(col, row, str(count), ha="center", va="center",
                  color="white" if count > matrix.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)


def probability_metrics(probabilities: np.ndarray, y_true: np.ndarray, out_dir: Path) -> dict:
    table = reliability_bins(probabilities, y_true)
    ece = expected_calibration_error(table)
    plot_reliability(table, ece, out_dir / "reliability_diagram.png")
    (out_dir / "reliability.json").write_text(json.dumps(table, indent=2))
    return {"ece": ece, "brier": brier_score(probabilities, y_true)}


def latency_metrics(batch_seconds: list[float], rows: int) -> dict:
    milliseconds = np.array(batch_seconds) * 1000
    return {"latency_p50_ms": float(np.percentile(milliseconds, 50)),
            "latency_p95_ms": float(np.percentile(milliseconds, 95)),
            "throughput_rows_per_s": rows / float(np.sum(batch_seconds))}


def latency_ratio_to_base(model, tokenizer, meta: dict, texts: list[str], repeats: int) -> dict:
    """The candidate's forward time as it is served (a mergeable adapter folded into the base) over its base
    model's without the adapter, on the same batch, timed in turn in this process after a warm-up; the median
    of the per-pair ratios. Load on the machine slows both alike, so the ratio, unlike a wall time, does not
    depend on what else the machine runs."""
    import time

    import torch

    base = load_base_classifier(verified_base_path(meta["base_model"]), meta["labels"], meta.get("pooling", "cls"))
    base.eval()
    encoded = tokenizer(texts, truncation=True, max_length=meta["max_length"], padding=True, return_tensors="pt")

    def seconds(network) -> float:
        started = time.perf_counter()
        network(**encoded)
        return time.perf_counter() - started

    with torch.inference_mode():
        seconds(model), seconds(base)  # warm-up: first calls allocate
        pairs = [(seconds(model), seconds(base)) for _ in range(repeats)]
    return {"latency_ratio_to_base": float(np.median([candidate / plain for candidate, plain in pairs])),
            "latency_batch_ms": float(np.median([candidate for candidate, _ in pairs]) * 1000),
            "latency_base_batch_ms": float(np.median([plain for _, plain in pairs]) * 1000)}


def headline(metrics: dict, labels: list[str]) -> dict:
    """The test figures a reader compares between runs (``dvc metrics show/diff``), without counts or timings."""
    keys = ["accuracy", "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high", "ece", "brier",
            *(f"{kind}_{name}" for kind in ("f1", "recall") for name in labels)]
    return {key: round(metrics[key], 6) for key in keys if key in metrics}


def evaluate(bundle_dir: Path, test_split: Path, settings: EvalParams, out_dir: Path, bootstrap_resamples: int = 1000,
             seed: int = 0, headline_out: Path | None = None, labels_out: Path | None = None) -> dict:
    """Score the test split: everything into ``out_dir``; the headline figures (DVC metrics) and the
    actual/predicted label of every test row (DVC's confusion-matrix plot) to their own files when asked."""
    model, tokenizer, meta = load_bundle(bundle_dir, merged=True)  # as every scorer serves it
    labels = meta["labels"]
    test = pd.read_parquet(test_split)
    batch_seconds: list[float] = []
    probabilities = predict_proba(model, tokenizer, test["text"].tolist(), meta["max_length"], settings.batch_size,
                                  progress=True, batch_seconds=batch_seconds)
    predicted = [labels[i] for i in probabilities.argmax(axis=1)]
    y_true = test["label"].map({name: i for i, name in enumerate(labels)}).to_numpy()
    metrics = classification_metrics(test["label"].tolist(), predicted, labels)
    low, high = bootstrap_macro_f1_ci(y_true, probabilities.argmax(axis=1), len(labels), bootstrap_resamples, seed)
    metrics.update(macro_f1_ci_low=low, macro_f1_ci_high=high)
    matrix = confusion_matrix(test["label"], predicted, labels=labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics.update(probability_metrics(probabilities, y_true, out_dir))
    metrics.update(latency_metrics(batch_seconds, len(test)))
    metrics.update(latency_ratio_to_base(model, tokenizer, meta, test["text"].tolist()[:settings.latency_rows],
                                         settings.latency_repeats))
    (out_dir / files.METRICS).write_text(json.dumps(metrics, indent=2))
    (out_dir / "confusion_matrix.json").write_text(json.dumps({"labels": labels, "matrix": matrix.tolist()}))
    plot_confusion(matrix, labels, out_dir / "confusion_matrix.png")
    predictions = test[["id", "label"]].assign(predicted=predicted)
    for i, name in enumerate(labels):
        predictions[f"prob_{name}"] = probabilities[:, i]
    predictions.to_parquet(out_dir / files.TEST_PREDICTIONS, index=False)
    (out_dir / files.SLICES).write_text(json.dumps(
        slice_figures(test, {"candidate": pd.Series(predicted, index=test.index)}, settings.slice_by), indent=2))
    if headline_out is not None:
        headline_out.parent.mkdir(parents=True, exist_ok=True)
        headline_out.write_text(json.dumps(headline(metrics, labels), indent=2) + "\n")
    if labels_out is not None:
        labels_out.parent.mkdir(parents=True, exist_ok=True)
        predictions[["label", "predicted"]].rename(columns={"label": "actual"}).to_csv(labels_out, index=False)
    return metrics
