"""Test figures per slice of the test rows (the data source each row came from, its length in words), so a
candidate that is better on average but worse on one source or one kind of text is seen and can be gated
(``gate.max_slice_macro_f1_drop``)."""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score

LENGTH_BUCKETS = ((12, "1-12 words"), (24, "13-24 words"), (None, "25+ words"))  # fixed: comparable across runs


def _length_bucket(text: str) -> str:
    words = len(str(text).split())
    return next(name for upper, name in LENGTH_BUCKETS if upper is None or words <= upper)


def slice_of(test: pd.DataFrame, slice_by: tuple[str, ...]) -> dict[str, pd.Series]:
    """kind -> the slice each test row belongs to (``source`` needs the split's source column, ``length`` its text)."""
    kinds = {"source": lambda: test["source"].astype(str), "length": lambda: test["text"].map(_length_bucket)}
    return {kind: kinds[kind]() for kind in slice_by}


def slice_figures(test: pd.DataFrame, predicted: dict[str, pd.Series], slice_by: tuple[str, ...]) -> dict:
    """'source=news.csv' -> {rows, <model>_macro_f1, <model>_accuracy for each model in ``predicted``}, on the
    test rows (``test`` has id, label, and the slice columns; ``predicted`` aligned with it). Macro-F1 is over the
    labels the slice holds; a kind with a single slice (one source) adds nothing over the overall figures."""
    figures = {}
    for kind, membership in slice_of(test, slice_by).items():
        if membership.nunique() < 2:
            continue
        for value, index in membership.groupby(membership).groups.items():
            actual = test.loc[index, "label"]
            row = {"rows": int(len(index))}
            for model, labels in predicted.items():
                chosen = labels.loc[index]
                row[f"{model}_macro_f1"] = float(f1_score(actual, chosen, labels=sorted(set(actual)), average="macro",
                                                          zero_division=0))
                row[f"{model}_accuracy"] = float(accuracy_score(actual, chosen))
            figures[f"{kind}={value}"] = row
    return figures
