"""Champion vs candidate on the very same test rows: metrics of both (overall and per slice), paired bootstrap,
McNemar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def compare(candidate_predictions: Path, test_split: Path, champion_bundle: Path | None,
            champion_version: str | None, out: Path, resamples: int = 1000, seed: int = 0,
            slice_by: tuple[str, ...] = ()) -> dict:
    """Score the champion bundle on the candidate's test rows; write and return the comparison (with both
    models' figures per slice of ``slice_by``)."""
    result: dict = {"champion_version": champion_version}
    if champion_bundle is not None:  # imported here: with no champion to score, a re-run needs no torch
        from finsent.bundle import load_bundle, predict_proba
        from finsent.evaluate.metrics import classification_metrics
        from finsent.evaluate.slices import slice_figures
        from finsent.evaluate.statistics import mcnemar, paired_bootstrap

        candidate = pd.read_parquet(candidate_predictions)
        test = pd.read_parquet(test_split).set_index("id").loc[candidate["id"]].reset_index()
        model, tokenizer, meta = load_bundle(champion_bundle, merged=True)
        labels = meta["labels"]
        probabilities = predict_proba(model, tokenizer, test["text"].tolist(), meta["max_length"], progress=True)
        index = {name: i for i, name in enumerate(labels)}
        y_true = candidate["label"].map(index).to_numpy()
        y_candidate = candidate["predicted"].map(index).to_numpy()
        y_champion = probabilities.argmax(axis=1)
        result["champion"] = classification_metrics(candidate["label"].tolist(), [labels[i] for i in y_champion],
                                                    labels)
        result["paired"] = paired_bootstrap(y_true, y_candidate, y_champion, len(labels), resamples, seed)
        result["mcnemar"] = mcnemar(y_true, y_candidate, y_champion)
        result["rows"] = int(len(candidate))
        result["slices"] = slice_figures(test.assign(label=candidate["label"].to_numpy()), {
            "candidate": pd.Series(candidate["predicted"].to_numpy(), index=test.index),
            "champion": pd.Series([labels[i] for i in y_champion], index=test.index)}, slice_by)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else str(v)))
    return result
