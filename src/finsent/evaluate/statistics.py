"""Resampling and paired tests on per-row predictions: how sure are we, and is B better than A?"""

from __future__ import annotations

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import f1_score


RESAMPLED_ROWS_AT_ONCE = 2_000_000  # indices held per chunk of resamples (16 MB)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> float:
    return float(f1_score(y_true, y_pred, labels=list(range(n_labels)), average="macro", zero_division=0))


def macro_f1_per_row(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row of two (resamples x rows) label arrays at once, as sklearn's
    ``f1_score(average="macro", labels=range(n_labels), zero_division=0)`` of each row: per label
    2 TP / (true + predicted), 0 where a label is neither. One bincount for all rows, where f1_score per
    resample spends most of a bootstrap's time checking its inputs."""
    cells = np.arange(len(y_true))[:, None] * n_labels
    size = len(y_true) * n_labels

    def counts(ids: np.ndarray) -> np.ndarray:
        return np.bincount(ids, minlength=size).reshape(len(y_true), n_labels)

    true_positive = counts((cells + y_true)[y_true == y_pred])
    denominator = counts((cells + y_true).ravel()) + counts((cells + y_pred).ravel())
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(denominator.shape), where=denominator > 0)
    return f1.mean(axis=1)


def _resamples(rng: np.random.Generator, n: int, resamples: int):
    """Bootstrap row indices, one resample per row, in chunks of bounded memory (the draws are those of one
    ``rng.integers(0, n, n)`` per resample, so the figures do not depend on the chunking)."""
    per_chunk = max(1, RESAMPLED_ROWS_AT_ONCE // max(n, 1))
    for start in range(0, resamples, per_chunk):
        yield np.stack([rng.integers(0, n, n) for _ in range(min(per_chunk, resamples - start))])


def bootstrap_macro_f1_ci(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int, resamples: int = 1000,
                          seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of macro-F1 over test rows."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([macro_f1_per_row(y_true[rows], y_pred[rows], n_labels)
                             for rows in _resamples(rng, len(y_true), resamples)])
    low, high = np.quantile(scores, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def paired_bootstrap(y_true: np.ndarray, candidate: np.ndarray, champion: np.ndarray, n_labels: int,
                     resamples: int = 1000, seed: int = 0) -> dict:
    """Macro-F1 difference (candidate - champion) on the same resampled rows: estimate, 95 % CI, and
    the one-sided p-value that the candidate is not better (share of resamples with difference <= 0)."""
    rng = np.random.default_rng(seed)
    diffs = np.concatenate([macro_f1_per_row(y_true[rows], candidate[rows], n_labels)
                            - macro_f1_per_row(y_true[rows], champion[rows], n_labels)
                            for rows in _resamples(rng, len(y_true), resamples)])
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
