"""Resampling and paired tests on per-row predictions: how sure are we, and is B better than A?"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import f1_score


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro", zero_division=0))


def bootstrap_macro_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, resamples: int = 1000,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of macro-F1 over test rows."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    scores = [_macro_f1(y_true[idx], y_pred[idx], n_labels) for idx in (rng.integers(0, n, n) for _ in range(resamples))]
    low, high = np.quantile(scores, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def paired_bootstrap(y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray, n_labels: int,
                     resamples: int = 1000, seed: int = 0) -> dict:
    """Macro-F1 difference (candidate - champion) on the same resampled rows: estimate, 95 % CI, and
    the one-sided p-value that the candidate is not better (share of resamples with difference <= 0)."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    diffs = np.array([_macro_f1(y_true[i], candidate[i], n_labels) - _macro_f1(y_true[i], champion[i], n_labels)
                      for i in (rng.integers(0, n, n) for _ in range(resamples))])
    return {"macro_f1_diff": _macro_f1(y_true, candidate, n_labels) - _macro_f1(y_true, champion, n_labels),
            "macro_f1_diff_ci_low": float(np.quantile(diffs, 0.025)),
            "macro_f1_diff_ci_high": float(np.quantile(diffs, 0.975)),
            "p_value_not_better": float(np.mean(diffs <= 0))}


def mcnemar(y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray) -> dict:
    """Exact McNemar test on the rows where exactly one of the two models is right."""
    candidate_only = int(np.sum((candidate == y_true) & (champion != y_true)))
    champion_only = int(np.sum((candidate != y_true) & (champion == y_true)))
    discordant = candidate_only + champion_only
    p_value = 1.0 if discordant == 0 else float(binomtest(candidate_only, discordant, 0.5).pvalue)
    return {"candidate_only_correct": candidate_only, "champion_only_correct": champion_only,
            "mcnemar_p_value": p_value}
