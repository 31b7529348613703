"""Are the probabilities honest? Expected calibration error, Brier score, reliability diagram."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def reliability_bins(probabilities: np.ndarray, y_true: np.ndarray, bins: int = 10) -> list[dict]:
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    table = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            table.append({"low": float(low), "high": float(high), "count": int(inside.sum()),
                          "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return table


def expected_calibration_error(table: list[dict]) -> float:
    total = sum(row["count"] for row in table)
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table))


def brier_score(probabilities: np.ndarray, y_true: np.ndarray) -> float:
    """Mean squared distance between the probability vector and the one-hot truth."""
    onehot = np.eye(probabilities.shape[1])[y_true]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def plot_reliability(table: list[dict], ece: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    axes.bar([(r["low"] + r["high"]) / 2 for r in table], [r["accuracy"] for r in table],
             width=[r["high"] - r["low"] for r in table], edgecolor="black", alpha=0.7, label="accuracy")
    axes.plot([r["confidence"] for r in table], [r["accuracy"] for r in table], "o", color="darkred",
              label="mean confidence")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy",
             title=f"Reliability (test), ECE {ece:.3f}")
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
